//! A host's `commands` (set-up commands such as the blog's iptables lines): planned in file
//! order with references resolved, and refused when they would need a shell.

use pen_lab::scenario::parse_str;

const HOST: &str =
    "[vars]\nmark = \"1\"\n[[host]]\nname = \"pen\"\naddresses = [\"lo:10.0.0.1/32\"]\n";

fn plan(commands: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let text = format!("{HOST}commands = {commands}\n");
    parse_str(&text, "scenarios/x.toml")
        .and_then(|s| s.plan("scenarios/x.toml", "x", None))
        .map(|p| p.topology.commands)
        .map_err(|e| e.to_string())
}

#[test]
fn commands_are_planned_in_order_with_references_resolved() {
    let got = plan(
        r#"["iptables -t mangle -N DIVERT", "iptables  -t mangle -A DIVERT -j MARK --set-mark {mark}", "ip rule add fwmark {mark} lookup 100"]"#,
    )
    .unwrap();
    let argv = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            ("pen".to_string(), argv("iptables -t mangle -N DIVERT")),
            (
                "pen".to_string(),
                argv("iptables -t mangle -A DIVERT -j MARK --set-mark 1")
            ),
            ("pen".to_string(), argv("ip rule add fwmark 1 lookup 100")),
        ]
    );
}

#[test]
fn commands_that_need_a_shell_or_are_empty_are_refused_with_their_key() {
    let e =
        plan(r#"["iptables -L", "  ", "echo x > /tmp/y", "iptables -m comment --comment 'a b'"]"#)
            .unwrap_err();
    assert!(
        e.contains("host[0].commands[1]: expected a command line such as"),
        "{e}"
    );
    assert!(
        e.contains("host[0].commands[2]: expected a plain command line") && e.contains("'>'"),
        "{e}"
    );
    assert!(e.contains("host[0].commands[3]"), "{e}");
    assert!(!e.contains("commands[0]"), "{e}");
}
