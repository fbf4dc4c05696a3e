//! The login pages in a real headless browser (Debian `chromium` driven by `chromium-driver` over the W3C
//! WebDriver protocol): French, every field labelled, the professional's login with TOTP and the patient's
//! consent page, each ending at the application's redirect URI with a code. CI installs them (`.ci/run`);
//! elsewhere, without them, the test says so and passes unless `SOCLE_REQUIRE_BROWSER=1`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{AuthFixture, PASSWORD, after, backends, now_step, printed};
use serde_json::{Value, json};

struct Driver {
    child: Child,
    base: String,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn driver_binary() -> Option<String> {
    [
        "chromedriver",
        "/usr/bin/chromedriver",
        "/usr/lib/chromium/chromedriver",
    ]
    .iter()
    .find(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .map(|s| s.to_string())
}

impl Driver {
    fn start(bin: &str) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if ureq::get(&format!("{base}/status")).call().is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]}}}});
        let r: Value = ureq::post(&format!("{base}/session"))
            .send_json(caps)
            .expect("session WebDriver")
            .into_json()
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        Driver {
            child,
            base,
            session,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let req = ureq::request(method, &url);
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) => r.into_json().unwrap_or(Value::Null),
            Err(ureq::Error::Status(c, r)) => panic!(
                "WebDriver {method} {path} → {c} {}",
                r.into_string().unwrap_or_default()
            ),
            Err(e) => panic!("WebDriver : {e}"),
        }
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "url", Some(json!({"url": url})));
    }

    fn url(&self) -> String {
        self.cmd("GET", "url", None)["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn script(&self, js: &str) -> Value {
        self.cmd(
            "POST",
            "execute/sync",
            Some(json!({"script": js, "args": []})),
        )["value"]
            .clone()
    }

    fn element(&self, css: &str) -> String {
        let r = self.cmd(
            "POST",
            "element",
            Some(json!({"using": "css selector", "value": css})),
        );
        r["value"]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("élément")
            .to_string()
    }

    fn type_in(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.cmd(
            "POST",
            &format!("element/{e}/value"),
            Some(json!({"text": text})),
        );
    }

    /// Clicks a submit button and waits for the next page (a submission returns before it is loaded): the old
    /// page is marked first, and the new one is the loaded page without the mark.
    fn click(&self, css: &str) {
        let e = self.element(css);
        self.script("window.__socle_old_page = true; return null");
        self.cmd("POST", &format!("element/{e}/click"), Some(json!({})));
        for _ in 0..100 {
            let next = self.script(
                "return window.__socle_old_page !== true && document.readyState === 'complete'",
            );
            if next == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pas de nouvelle page après le clic sur {css}");
    }

    /// The page is French, has one h1, and every visible field has a label.
    fn check_accessible(&self, what: &str) {
        let v = self.script(
            "return {lang: document.documentElement.lang, h1: document.querySelectorAll('h1').length, \
             unlabelled: [...document.querySelectorAll('input:not([type=hidden])')]\
               .filter(i => !document.querySelector('label[for=\"' + i.id + '\"]')).map(i => i.name)}",
        );
        assert_eq!(v["lang"], "fr", "{what} : {v}");
        assert_eq!(v["h1"], 1, "{what} : {v}");
        assert_eq!(
            v["unlabelled"],
            json!([]),
            "{what} : champs sans étiquette {v}"
        );
    }

    fn wait_text(&self, needle: &str) {
        for _ in 0..50 {
            if self
                .script("return document.body ? document.body.innerText : ''")
                .as_str()
                .is_some_and(|t| t.contains(needle))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "« {needle} » absent de la page : {}",
            self.script("return document.body.innerText")
        );
    }

    fn wait_url(&self, prefix: &str) -> String {
        for _ in 0..50 {
            let u = self.url();
            if u.starts_with(prefix) {
                return u;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "l'adresse {} ne commence pas par {prefix} ; page : {}",
            self.url(),
            self.script("return document.body.innerText")
        );
    }
}

fn code_in(url: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
}

#[test]
fn login_pages_in_a_real_browser() {
    let Some(bin) = driver_binary() else {
        assert!(
            std::env::var("SOCLE_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "SOCLE_REQUIRE_BROWSER=1 mais chromedriver est absent (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "note: pages non testées dans un navigateur (apt-get install chromium chromium-driver)"
        );
        return;
    };
    // The pages are the same on both backends: SQLite suffices.
    let backend = backends().remove(0);
    let st = AuthFixture::new(&backend);
    let root = st.root.as_str();
    let d = Driver::start(&bin);
    let challenge = socle_auth::pkce_challenge(&socle_auth::random_token(32));
    // The applications' redirect URI: a listener that answers every request (a real page to land on).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redirect = format!(
        "http://127.0.0.1:{}/retour",
        listener.local_addr().unwrap().port()
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut s = stream;
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 24\r\nConnection: close\r\n\r\n<html><p>retour</p></html>");
        }
    });
    let register = |realm: &str| {
        after(
            &printed(&st.s.cli(&[
                "clients",
                "register",
                "--realm",
                realm,
                "--name",
                "Carnet",
                "--redirect-uri",
                &redirect,
                "--auth-method",
                "none",
            ])),
            "client_id:",
        )
    };
    let (pro_app, patient_app) = (register("pro"), register("patient"));
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();

    // A professional: login page, wrong password (the error is announced), then password and TOTP.
    d.go(&format!(
        "{root}/auth/pro/authorize?response_type=code&client_id={pro_app}&redirect_uri={}&scope=openid&state=b1&code_challenge={challenge}&code_challenge_method=S256",
        enc(&redirect)
    ));
    d.check_accessible("connexion");
    d.type_in("#login", &st.rpps);
    d.type_in("#password", "pas-le-bon-mot-de-passe");
    d.click("button[type=submit]");
    let alert = d.script(
        "const e = document.querySelector('[role=alert]'); return e ? e.textContent : null",
    );
    assert!(
        alert.as_str().is_some_and(|t| t.contains("incorrect")),
        "{alert}"
    );
    d.type_in("#password", PASSWORD);
    d.click("button[type=submit]");
    d.check_accessible("second facteur");
    d.type_in("#code", &socle_auth::totp::hotp(&st.totp, now_step(), 6));
    d.click("button[type=submit]");
    let back = d.wait_url(&redirect);
    assert!(
        code_in(&back).is_some() && back.contains("state=b1"),
        "{back}"
    );

    // A patient: login, TOTP, then the consent page in plain French, accepted.
    d.go(&format!(
        "{root}/auth/patient/authorize?response_type=code&client_id={patient_app}&redirect_uri={}&scope=openid%20patient/*.rs&code_challenge={challenge}&code_challenge_method=S256",
        enc(&redirect)
    ));
    d.check_accessible("connexion patient");
    d.type_in("#login", &st.ins);
    d.type_in("#password", PASSWORD);
    d.click("button[type=submit]");
    d.type_in(
        "#code",
        &socle_auth::totp::hotp(&st.patient_totp, now_step(), 6),
    );
    d.click("button[type=submit]");
    // A form submission returns before the next page is there: wait for it.
    d.wait_text("consulter");
    let text = d.script("return document.body.innerText");
    assert!(
        text.as_str().is_some_and(|t| t.contains("Carnet")),
        "{text}"
    );
    d.check_accessible("consentement");
    d.click("button[value=accept]");
    let back = d.wait_url(&redirect);
    assert!(code_in(&back).is_some(), "{back}");
}
