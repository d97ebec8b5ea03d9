# bash completion for penctl (pen-rs)                                -*- shell-script -*-

_penctl_commands="abort_on_error accept_proxy acl ascii blacklist block client_acl clients_max close
conn_max connection control control_acl control_any_file debug delayed_forward drain_timeout dsr_if
dsr_ip dummy epoll exit hash http idle_timeout idlers include io_uring keepalive kqueue listen log
mode no peek pending_max pid poll prio prometheus proxy_protocol recent roundrobin select server servers
socket source ssl_ciphers ssl_client_renegotiation_interval ssl_ocsp_response ssl_option
ssl_sni_path status stubborn table_hash tarpit tarpit_acl tarpit_capture tarpit_persist
tarpit_rate tcp_fastclose tcp_nodelay timeout tracking transparent udp_flow_idle upgrade
upgrade_socket version
web_stats weight worker_threads write"

_penctl()
{
    local cur prev
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    if [[ $COMP_CWORD -eq 1 ]]; then
        # The control socket: a Unix socket path, host:port, or an option.
        if [[ "$cur" == -* ]]; then
            COMPREPLY=( $(compgen -W "--each --same --version -V" -- "$cur") )
        else
            COMPREPLY=( $(compgen -f -- "$cur") )
        fi
        return
    fi
    case "$prev" in
        --each) COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
        include|write|web_stats|log|ssl_ocsp_response|ssl_sni_path)
            COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
        tcp_fastclose) COMPREPLY=( $(compgen -W "up down both off" -- "$cur") ); return ;;
        server) return ;;
    esac
    local i first=""
    for (( i = 2; i < COMP_CWORD; i++ )); do
        [[ "${COMP_WORDS[i]}" == --* ]] && continue
        [[ "${COMP_WORDS[i-1]}" == --each ]] && continue
        first="${COMP_WORDS[i]}"; break
    done
    if [[ -z "$first" || "$first" == no && $COMP_CWORD -eq $((i + 1)) ]]; then
        COMPREPLY=( $(compgen -W "$_penctl_commands --same" -- "$cur") )
    elif [[ "$first" == server ]]; then
        COMPREPLY=( $(compgen -W "acl address port max hard blacklist weight prio check" -- "$cur") )
    fi
}
complete -F _penctl penctl
