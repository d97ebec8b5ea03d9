# bash completion for pen (pen-rs)                                   -*- shell-script -*-
# Options as `pen --help` lists them; -o/-O take penctl commands (see penctl.bash).

_pen_rs_commands="abort_on_error accept_proxy acl ascii blacklist block client_acl clients_max close
conn_max connection control control_acl control_any_file debug delayed_forward drain_timeout dsr_if
dsr_ip dummy epoll exit hash http idle_timeout idlers include io_uring keepalive kqueue listen log
mode no peek pending_max pid poll prio prometheus proxy_protocol recent roundrobin select server servers
socket source ssl_ciphers ssl_client_renegotiation_interval ssl_ocsp_response ssl_option
ssl_sni_path status stubborn table_hash tarpit tarpit_acl tarpit_capture tarpit_persist
tarpit_rate tcp_fastclose tcp_nodelay timeout tracking transparent udp_flow_idle upgrade
upgrade_socket version
web_stats weight worker_threads write"

_pen()
{
    local cur prev
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    case "$prev" in
        -F|-w|-l|-p|-E|-K|-G)
            COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
        -A|-j)
            COMPREPLY=( $(compgen -d -- "$cur") ); return ;;
        -u)
            COMPREPLY=( $(compgen -u -- "$cur") ); return ;;
        -o|-O)
            COMPREPLY=( $(compgen -W "$_pen_rs_commands" -- "$cur") ); return ;;
        -L)
            COMPREPLY=( $(compgen -W "ssl23 tls1" -- "$cur") ); return ;;
        -B|-C|-T|-S|-b|-c|-e|-i|-m|-q|-t|-x)
            return ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "-A -B -C -D -E -F -G -H -K -L -N -O -P -Q -R -S -T -U -V -W
            -X -Z -a -b -c -d -e -f -h -i -j -l -m -n -o -p -q -r -s -t -u -w -x
            --help --version" -- "$cur") )
    fi
}
complete -F _pen pen
