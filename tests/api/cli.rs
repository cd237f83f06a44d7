use std::process::Command;

fn wxtopup(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxtopup"));
    command.args(args).env_remove("DATABASE_URL").env("APP_ENV", "development");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the binary runs")
}

#[test]
fn help_prints_the_usage_and_exits_zero_whatever_the_environment() {
    for flag in ["--help", "-h"] {
        // A broken setting would stop `serve`; help does not read the settings.
        let output = wxtopup(&[flag], &[("PORT", "not-a-port")]);
        assert!(output.status.success(), "{flag}: {:?}", output.status);
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("usage: wxtopup") && text.contains("migrate"), "{text}");
    }
}

#[test]
fn an_unknown_command_is_refused_with_the_usage() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("cli.db").display());
    let output = wxtopup(&["serv"], &[("DATABASE_URL", &url), ("PAYMENT_SANDBOX", "true")]);
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("unknown command") && text.contains("usage:"), "{text}");
}
