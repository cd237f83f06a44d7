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

#[test]
fn production_refuses_to_start_naming_every_missing_setting_at_once() {
    // Away from the repository's .env files: only what is passed here counts.
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wxtopup"))
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("APP_ENV", "production")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let text = String::from_utf8_lossy(&output.stderr);
    for var in [
        "DATABASE_URL",
        "MYSQL_ADDRESS",
        "WECHAT_MCH_ID",
        "WECHAT_ENV_ID",
        "WECHAT_PAYMENT_CALLBACK_SERVICE",
        "TOPUP_API_URL",
    ] {
        assert!(text.contains(var), "{var} is not named: {text}");
    }
    assert!(text.contains("5 problems"), "{text}");
    // Nothing was created: no local database file in the working directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
