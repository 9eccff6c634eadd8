//! The floor of a relay built on tollgate's HTTP stack: axum's server and hyper's pooled
//! client (the ones `tollgate serve` uses), forwarding each `POST` body as bytes to one
//! upstream and its answer back — no policy, no JSON, no routing, no accounting. No relay on
//! this stack can be faster; `scripts/relay_vs_nginx/run.sh` measures it beside nginx and
//! `tollgate serve` so the gap between tollgate and nginx splits into "the stack" and
//! "tollgate's own work".
//!
//! ```sh
//! cargo run --release --example relay_floor -- 127.0.0.1:18474 http://127.0.0.1:18471
//! ```

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone)]
struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

async fn forward(State(up): State<Upstream>, uri: Uri, body: Bytes) -> Response {
    let target = format!("{}{}", up.base, uri.path());
    let mut req = hyper::Request::new(Full::new(body));
    *req.method_mut() = hyper::Method::POST;
    match target.parse() {
        Ok(u) => *req.uri_mut() = u,
        Err(_) => return status(StatusCode::BAD_REQUEST),
    }
    req.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    let Ok(resp) = up.client.request(req).await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let (head, body) = resp.into_parts();
    match body.collect().await {
        Ok(b) => Response::from_parts(head, Body::from(b.to_bytes())),
        Err(_) => status(StatusCode::BAD_GATEWAY),
    }
}

fn status(s: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = s;
    r
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(base)) = (args.next(), args.next()) else {
        return Err("usage: relay_floor LISTEN_ADDR UPSTREAM_BASE_URL".into());
    };
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    let up = Upstream {
        client: Client::builder(TokioExecutor::new()).build(tcp),
        base: base.trim_end_matches('/').to_string(),
    };
    let app = axum::Router::new()
        .fallback(axum::routing::post(forward))
        .with_state(up);
    use axum::serve::ListenerExt;
    // As `tollgate serve` does: small answers go out at once.
    let listener = tokio::net::TcpListener::bind(&listen).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}
