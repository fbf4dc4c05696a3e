//! The answers of an S3 server (object listings, error documents) are bytes from outside: reading them must never
//! panic, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = socle_store::s3::parse_list(data);
});
