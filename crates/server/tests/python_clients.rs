//! Real third-party clients: Python `requests` and `fhirpy` run `tests/clients/python_clients.py` against the
//! server on every backend. CI installs them (`.ci/run`); elsewhere, without them, the test says so and passes
//! only if `SOCLE_REQUIRE_CLIENTS` is not set.

mod common;

use std::process::Command;

use common::{Server, backends};

#[test]
fn python_requests_and_fhirpy() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/clients/python_clients.py"
    );
    if !common::python_with("requests, fhirpy", "pip install requests fhirpy") {
        return;
    }
    for b in backends() {
        let s = Server::start(&b);
        let out = Command::new("python3")
            .arg(script)
            .arg(&s.base)
            .output()
            .expect("python3");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{b:?}: {stdout}");
        assert!(out.status.success(), "{b:?}: {stdout}\n{stderr}");
    }
}

/// OAuth 2.0 / OpenID Connect flows written with Python `requests` (`tests/clients/auth_flows.py`): client
/// credentials, code + PKCE through the login pages with a TOTP computed by Python, refresh rotation and reuse,
/// introspection, revocation.
#[test]
fn python_requests_auth_flows() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/clients/auth_flows.py"
    );
    if !common::python_with("requests", "pip install requests") {
        return;
    }
    for b in backends() {
        let f = common::AuthFixture::new(&b);
        let out = Command::new("python3")
            .arg(script)
            .args([
                f.root.as_str(),
                &f.sys.0,
                &f.sys.1,
                &f.app,
                &f.rpps,
                common::PASSWORD,
                &socle_auth::totp::base32(&f.totp),
                common::REDIRECT,
            ])
            .output()
            .expect("python3");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{b:?}: {stdout}");
        assert!(out.status.success(), "{b:?}: {stdout}\n{stderr}");
    }
}
