//! Document bytes in an S3-compatible object store (MinIO, Ceph RGW, Garage, the S3 service of a sovereign cloud
//! provider…), behind the same [`BlobStore`] trait as the local directory.
//!
//! Objects are named like local blobs — `<prefix><2 hex>/<2 hex>/<64 hex>`, the SHA-256 of the bytes — and
//! addressed path-style (`<endpoint>/<bucket>/<key>`), which every S3-compatible server accepts. Requests are
//! signed with AWS Signature Version 4, the payload's SHA-256 included (`x-amz-content-sha256`): the server
//! refuses a body altered on the way, and a `PUT` it acknowledged is durable (S3's contract). Every read is still
//! checked against the name, as for local blobs. Idempotent requests are retried on a network error or a 5xx
//! answer (three attempts, 0.2 s then 0.8 s apart); a refusal (403: wrong key or signature, missing bucket) is
//! reported at once, with the server's error code.

use std::io::Read;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::blob::{BlobError, BlobRef, BlobStore, check_name, sha256_hex};

type HmacSha256 = Hmac<Sha256>;

/// Where the objects are and the key that signs requests.
#[derive(Clone)]
pub struct S3Config {
    /// `http(s)://host[:port]` of the S3 API.
    pub endpoint: String,
    pub bucket: String,
    /// Prepended to every object name (`socle/` for instance); may be empty.
    pub prefix: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret key.
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// From `s3://bucket[/prefix]`, the endpoint, the region and the key.
    pub fn from_url(
        url: &str,
        endpoint: &str,
        region: &str,
        access_key: &str,
        secret_key: &str,
    ) -> Result<S3Config, BlobError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            BlobError::Io(format!(
                "stockage S3 : « {url} » n'est pas de la forme s3://compartiment[/préfixe]"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(BlobError::Io(format!(
                "stockage S3 : nom de compartiment invalide « {bucket} » (3 à 63 caractères : minuscules, chiffres, \
                 « - », « . »)"
            )));
        }
        let mut prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            prefix.push('/');
        }
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let authority = endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://"))
            .ok_or_else(|| {
                BlobError::Io(format!(
                    "stockage S3 : point d'accès « {endpoint} » : http:// ou https:// attendu"
                ))
            })?;
        if authority.is_empty() || authority.contains('/') {
            return Err(BlobError::Io(format!(
                "stockage S3 : point d'accès « {endpoint} » : hôte[:port] attendu, sans chemin"
            )));
        }
        if access_key.is_empty() || secret_key.is_empty() {
            return Err(BlobError::Io(
                "stockage S3 : clé d'accès absente (SOCLE_S3_ACCESS_KEY_ID et SOCLE_S3_SECRET_ACCESS_KEY, ou \
                 AWS_ACCESS_KEY_ID et AWS_SECRET_ACCESS_KEY)"
                    .into(),
            ));
        }
        Ok(S3Config {
            endpoint,
            bucket: bucket.to_string(),
            prefix,
            region: region.to_string(),
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
        })
    }

    fn host(&self) -> &str {
        self.endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, h)| h)
    }
}

/// Blobs in an S3-compatible bucket.
pub struct S3Blobs {
    cfg: S3Config,
    agent: ureq::Agent,
    max_size: u64,
}

/// An answer of the S3 server.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl S3Blobs {
    /// Connects to the bucket and checks that it answers with this key (`HEAD` on the bucket).
    pub fn open(cfg: S3Config) -> Result<Self, BlobError> {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build();
        let s = S3Blobs {
            cfg,
            agent,
            max_size: crate::blob::DEFAULT_MAX_BLOB,
        };
        let a = s.request("HEAD", "", &[], &[])?;
        match a.status {
            200 => Ok(s),
            404 => Err(BlobError::Io(format!(
                "stockage S3 : le compartiment « {} » n'existe pas sur {}",
                s.cfg.bucket, s.cfg.endpoint
            ))),
            code => Err(BlobError::Io(format!(
                "stockage S3 : le compartiment « {} » refuse cette clé (HTTP {code})",
                s.cfg.bucket
            ))),
        }
    }

    /// Sets the largest blob accepted.
    pub fn with_max_size(mut self, max: u64) -> Self {
        self.max_size = max;
        self
    }

    fn key_of(&self, name: &str) -> String {
        format!(
            "{}{}/{}/{}",
            self.cfg.prefix,
            &name[0..2],
            &name[2..4],
            name
        )
    }

    /// One signed request (`key` empty: the bucket itself), retried when it may be.
    fn request(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, BlobError> {
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 * 4u64.pow(attempt - 1)));
            }
            match self.request_once(method, key, query, body) {
                Ok(a) if a.status >= 500 => {
                    last = format!("HTTP {} {}", a.status, error_code(&a.body));
                }
                Ok(a) => return Ok(a),
                Err(e) => last = e,
            }
            tracing::warn!(method, attempt, error = %last, "stockage S3 : nouvel essai");
        }
        Err(BlobError::Io(format!(
            "stockage S3 injoignable ou en erreur après trois essais : {last}"
        )))
    }

    fn request_once(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, String> {
        let path = if key.is_empty() {
            format!("/{}", self.cfg.bucket)
        } else {
            format!("/{}/{}", self.cfg.bucket, key)
        };
        let path = uri_encode(&path, false);
        let now = chrono::Utc::now();
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let payload_hash = sha256_hex(body);
        let headers = [
            ("host", self.cfg.host().to_string()),
            ("x-amz-content-sha256", payload_hash.clone()),
            ("x-amz-date", amz_date.clone()),
        ];
        let authorization = sign(
            &self.cfg,
            &SignInput {
                method,
                path: &path,
                query,
                headers: &headers,
                payload_hash: &payload_hash,
                amz_date: &amz_date,
            },
        );
        let mut url = format!("{}{path}", self.cfg.endpoint);
        let q = canonical_query(query);
        if !q.is_empty() {
            url.push('?');
            url.push_str(&q);
        }
        let mut req = self
            .agent
            .request(method, &url)
            .set("Authorization", &authorization);
        for (k, v) in &headers {
            req = req.set(k, v);
        }
        let res = if method == "PUT" {
            req.set("Content-Type", "application/octet-stream")
                .send_bytes(body)
        } else {
            req.call()
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.to_string()),
        };
        let status = resp.status();
        let mut body = Vec::new();
        resp.into_reader()
            .take(self.max_size + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("lecture de la réponse : {e}"))?;
        Ok(Answer { status, body })
    }

    /// Refusals (4xx other than the expected ones) as errors that name the server's code.
    fn refused(&self, what: &str, a: &Answer) -> BlobError {
        BlobError::Io(format!(
            "stockage S3 : {what} refusé (HTTP {} {})",
            a.status,
            error_code(&a.body)
        ))
    }
}

impl BlobStore for S3Blobs {
    fn put(&self, bytes: &[u8]) -> Result<BlobRef, BlobError> {
        let blob = crate::blob::name_of(bytes, self.max_size)?;
        // Content-addressed: writing the same bytes again is harmless, so no existence check first (one round
        // trip instead of two).
        let a = self.request("PUT", &self.key_of(&blob.sha256), &[], bytes)?;
        if a.status != 200 {
            return Err(self.refused("écriture", &a));
        }
        Ok(blob)
    }

    fn get(&self, sha256: &str) -> Result<Vec<u8>, BlobError> {
        check_name(sha256)?;
        let a = self.request("GET", &self.key_of(sha256), &[], &[])?;
        match a.status {
            200 => {}
            404 => return Err(BlobError::NotFound(sha256.to_string())),
            _ => return Err(self.refused("lecture", &a)),
        }
        let found = sha256_hex(&a.body);
        if found != sha256 {
            tracing::error!(blob = sha256, "document altéré dans le stockage S3");
            return Err(BlobError::Corrupt {
                sha256: sha256.to_string(),
                found,
            });
        }
        Ok(a.body)
    }

    fn contains(&self, sha256: &str) -> Result<bool, BlobError> {
        check_name(sha256)?;
        let a = self.request("HEAD", &self.key_of(sha256), &[], &[])?;
        match a.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.refused("consultation", &a)),
        }
    }

    fn remove(&self, sha256: &str) -> Result<(), BlobError> {
        check_name(sha256)?;
        let a = self.request("DELETE", &self.key_of(sha256), &[], &[])?;
        match a.status {
            200 | 204 | 404 => Ok(()),
            _ => Err(self.refused("suppression", &a)),
        }
    }

    fn list_older_than(&self, before: SystemTime) -> Result<Vec<(String, u64)>, BlobError> {
        let before: chrono::DateTime<chrono::Utc> = before.into();
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // The prefix without its final `/`: keys are checked one by one below anyway, and a `/` in the query
            // (encoded `%2F`, as SigV4 requires) is mis-verified by some S3 stand-ins (moto, the test server).
            let prefix = self.cfg.prefix.trim_end_matches('/');
            let mut query = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(t) = &token {
                query.push(("continuation-token", t.as_str()));
            }
            let a = self.request("GET", "", &query, &[])?;
            if a.status != 200 {
                return Err(self.refused("liste", &a));
            }
            let page = parse_list(&a.body)?;
            for o in page.objects {
                let Some(name) = o.key.rsplit('/').next() else {
                    continue;
                };
                if check_name(name).is_err() || o.key != self.key_of(name) {
                    continue;
                }
                if o.last_modified < before {
                    out.push((name.to_string(), o.size));
                }
            }
            match page.next {
                Some(t) if page.truncated => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }
}

/// What a request's signature covers.
pub struct SignInput<'a> {
    pub method: &'a str,
    /// Already URI-encoded.
    pub path: &'a str,
    pub query: &'a [(&'a str, &'a str)],
    /// Lowercase names; all are signed.
    pub headers: &'a [(&'a str, String)],
    pub payload_hash: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: &'a str,
}

/// The `Authorization` header of AWS Signature Version 4 for service `s3`.
pub fn sign(cfg: &S3Config, r: &SignInput<'_>) -> String {
    sign_for(cfg, r, "s3")
}

fn sign_for(cfg: &S3Config, r: &SignInput<'_>, service: &str) -> String {
    let mut headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
        r.method,
        r.path,
        canonical_query(r.query),
        r.payload_hash
    );
    let date = &r.amz_date[..r.amz_date.len().min(8)];
    let scope = format!("{date}/{}/{service}/aws4_request", cfg.region);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        r.amz_date,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", cfg.secret_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [cfg.region.as_str(), service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        cfg.access_key
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail.
    let Ok(mut m) = HmacSha256::new_from_slice(key) else {
        return Vec::new();
    };
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Percent-encoding of SigV4: every byte but the unreserved ones (`A-Z a-z 0-9 - _ . ~`); `/` is encoded in
/// query names and values (`encode_slash`), kept in paths.
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (b == b'/' && !encode_slash)
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
        .collect();
    q.sort();
    q.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The `<Code>` of an S3 error document, if any.
fn error_code(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    text.split_once("<Code>")
        .and_then(|(_, r)| r.split_once("</Code>"))
        .map(|(c, _)| c.chars().take(80).collect())
        .unwrap_or_default()
}

/// One object of a listing.
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// A page of `ListObjectsV2`.
pub struct ListPage {
    pub objects: Vec<ListedObject>,
    pub truncated: bool,
    pub next: Option<String>,
}

/// A `ListObjectsV2` answer: the objects' key, size and date, and the continuation (the server's bytes: read or
/// refused, never trusted).
pub fn parse_list(body: &[u8]) -> Result<ListPage, BlobError> {
    use quick_xml::events::Event;
    let bad = |m: String| BlobError::Io(format!("stockage S3 : liste illisible : {m}"));
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut page = ListPage {
        objects: Vec::new(),
        truncated: false,
        next: None,
    };
    let mut path: Vec<Vec<u8>> = Vec::new();
    let (mut key, mut size, mut date) = (None::<String>, None::<u64>, None);
    let mut text = String::new();
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                if path.len() > 8 {
                    return Err(bad("imbrication trop profonde".into()));
                }
                path.push(e.local_name().as_ref().to_vec());
                text.clear();
            }
            Ok(Event::Text(t)) => {
                text.push_str(&t.xml10_content().map_err(|e| bad(e.to_string()))?);
            }
            Ok(Event::GeneralRef(r)) => {
                let c = match r.as_ref() {
                    b"amp" => '&',
                    b"lt" => '<',
                    b"gt" => '>',
                    b"quot" => '"',
                    b"apos" => '\'',
                    other => match r.resolve_char_ref() {
                        Ok(Some(c)) => c,
                        _ => {
                            return Err(bad(format!(
                                "entité inconnue « {} »",
                                String::from_utf8_lossy(other)
                            )));
                        }
                    },
                };
                text.push(c);
            }
            Ok(Event::End(_)) => {
                let names: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
                let value = std::mem::take(&mut text);
                match names.as_slice() {
                    [_, b"Contents"] => match (key.take(), size.take(), date.take()) {
                        (Some(key), Some(size), Some(last_modified)) => {
                            page.objects.push(ListedObject {
                                key,
                                size,
                                last_modified,
                            })
                        }
                        _ => return Err(bad("objet sans Key, Size ou LastModified".into())),
                    },
                    [_, b"Contents", b"Key"] => key = Some(value),
                    [_, b"Contents", b"Size"] => {
                        size = Some(
                            value
                                .trim()
                                .parse()
                                .map_err(|_| bad(format!("Size « {value} »")))?,
                        )
                    }
                    [_, b"Contents", b"LastModified"] => {
                        date = Some(
                            chrono::DateTime::parse_from_rfc3339(value.trim())
                                .map_err(|_| bad(format!("LastModified « {value} »")))?
                                .with_timezone(&chrono::Utc),
                        )
                    }
                    [_, b"IsTruncated"] => page.truncated = value.trim() == "true",
                    [_, b"NextContinuationToken"] => page.next = Some(value),
                    _ => {}
                }
                path.pop();
            }
            Ok(Event::Eof) if path.is_empty() => break,
            Ok(Event::Eof) => return Err(bad("réponse tronquée".into())),
            Ok(_) => {}
            Err(e) => return Err(bad(e.to_string())),
        }
        buf.clear();
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> S3Config {
        // The credentials of the AWS Signature Version 4 test suite.
        S3Config {
            endpoint: "https://example.amazonaws.com".into(),
            bucket: "exemple".into(),
            prefix: String::new(),
            region: "us-east-1".into(),
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        }
    }

    #[test]
    fn signature_of_the_reference_get_vanilla_request() {
        // `get-vanilla` of the AWS SigV4 test suite (service `service`, no payload).
        let headers = [
            ("host", "example.amazonaws.com".to_string()),
            ("x-amz-date", "20150830T123600Z".to_string()),
        ];
        let auth = sign_for(
            &example(),
            &SignInput {
                method: "GET",
                path: "/",
                query: &[],
                headers: &headers,
                payload_hash: &sha256_hex(b""),
                amz_date: "20150830T123600Z",
            },
            "service",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn encoding_and_query_order() {
        assert_eq!(uri_encode("/b/a b/é~", false), "/b/a%20b/%C3%A9~");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
        assert_eq!(
            canonical_query(&[("prefix", "socle/"), ("list-type", "2")]),
            "list-type=2&prefix=socle%2F"
        );
    }

    #[test]
    fn configuration_is_checked() {
        let ok = S3Config::from_url(
            "s3://docs/socle/",
            "http://127.0.0.1:9000/",
            "eu-west-3",
            "k",
            "s",
        )
        .unwrap();
        assert_eq!((ok.bucket.as_str(), ok.prefix.as_str()), ("docs", "socle/"));
        assert_eq!(ok.host(), "127.0.0.1:9000");
        assert!(
            !format!("{ok:?}").contains("\"s\""),
            "pas de secret dans les journaux"
        );
        for (url, endpoint, key) in [
            ("docs", "http://h", "k"),
            ("s3://Docs", "http://h", "k"),
            ("s3://d", "http://h", "k"),
            ("s3://docs", "ftp://h", "k"),
            ("s3://docs", "http://h/chemin", "k"),
            ("s3://docs", "http://h", ""),
        ] {
            assert!(
                S3Config::from_url(url, endpoint, "r", key, "s").is_err(),
                "{url} {endpoint} {key}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever the server answers, the listing is read or refused, never a panic.
        #[test]
        fn any_list_answer_is_handled(body in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
                                      key in "[a-z0-9/&;<>]{0,20}", size in "[0-9x]{0,4}") {
            let _ = parse_list(&body);
            let xml = format!("<L><Contents><Key>{key}</Key><Size>{size}</Size>\
                <LastModified>2026-11-26T10:00:00Z</LastModified></Contents></L>");
            let _ = parse_list(xml.as_bytes());
            let _ = error_code(&body);
        }
    }

    #[test]
    fn list_answers_are_read_or_refused() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>docs</Name><IsTruncated>true</IsTruncated>
<Contents><Key>ab/cd/abcd</Key><LastModified>2026-11-26T10:00:00.000Z</LastModified><Size>12</Size></Contents>
<NextContinuationToken>t&amp;1</NextContinuationToken></ListBucketResult>"#;
        let p = parse_list(xml).unwrap();
        assert_eq!(p.objects.len(), 1);
        assert_eq!(
            (p.objects[0].key.as_str(), p.objects[0].size),
            ("ab/cd/abcd", 12)
        );
        assert_eq!((p.truncated, p.next.as_deref()), (true, Some("t&1")));
        for bad in [
            &b"<L><Contents><Key>k</Key></Contents></L>"[..],
            b"<L><Contents><Key>k</Key><Size>x</Size><LastModified>2026-11-26T10:00:00Z</LastModified></Contents></L>",
            b"<L><Contents><Key>k</Key><Size>1</Size><LastModified>hier</LastModified></Contents></L>",
            b"<L><Contents><Key>k</Ke",
        ] {
            assert!(parse_list(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            error_code(b"<Error><Code>SignatureDoesNotMatch</Code></Error>"),
            "SignatureDoesNotMatch"
        );
    }
}
