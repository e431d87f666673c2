//! The body of a control-socket frame, as the daemon decodes a request (and a client an answer)
//! from whoever is on the other end: an error or a value, never a panic; a request decoded
//! encodes again to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medic_io::control::{self, Request, Response, MAX_REQUEST_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = control::decode_body::<Request>(data) {
        if let Ok(frame) = control::encode_frame(&request, MAX_REQUEST_BYTES) {
            let again: Request = control::decode_body(&frame[4..]).expect("re-encoded decodes");
            assert_eq!(again, request);
        }
    }
    let _ = control::decode_body::<Response>(data);
});
