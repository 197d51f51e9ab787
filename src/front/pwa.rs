//! The phone-first web app, served at `/` from assets embedded in the binary.
//! (Being written: this placeholder serves a minimal page.)

use warp::http::StatusCode;
use warp::reply::{Reply, Response};

/// The app's asset at `path` (`/`, `/app.js`, ...), if there is one.
pub fn asset(path: &str) -> Option<Response> {
    match path {
        "/" | "/index.html" => Some(
            warp::reply::with_status(
                warp::reply::with_header(
                    "<!doctype html><title>Bosun</title><p>Bosun</p>",
                    "content-type",
                    "text/html; charset=utf-8",
                ),
                StatusCode::OK,
            )
            .into_response(),
        ),
        _ => None,
    }
}
