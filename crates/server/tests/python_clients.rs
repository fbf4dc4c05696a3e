//! Real third-party clients: Python `requests` and `fhirpy` run `tests/clients/python_clients.py` against the
//! server on every backend. CI installs them (`.ci/run`); elsewhere, without them, the test says so and passes
//! only if `SOCLE_REQUIRE_CLIENTS` is not set.

mod common;

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
        common::run_python(script, &[&s.base], &format!("{b:?}"));
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
        common::run_python(
            script,
            &[
                f.root.as_str(),
                &f.sys.0,
                &f.sys.1,
                &f.app,
                &f.rpps,
                common::PASSWORD,
                &socle_auth::totp::base32(&f.totp),
                common::REDIRECT,
            ],
            &format!("{b:?}"),
        );
    }
}
