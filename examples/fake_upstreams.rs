//! Starts in-process fake upstreams on free 127.0.0.1 ports — one OpenAI-compatible
//! (`server::fake::FakeUpstream`), one strict Anthropic (`fake::anthropic`), one strict
//! Gemini (`fake::gemini`) — prints one `NAME BASE_URL` line for each, then serves until
//! its standard input closes. For end-to-end tests in other languages
//! (`tests/e2e_providers.py`): `cargo run --example fake_upstreams`.
//!
//! Every Anthropic call must carry the key `e2e-provider-key` (in `x-api-key`); Gemini calls
//! one in `x-goog-api-key`.

use std::io::Read;

use tollgate::server::fake::anthropic::FakeAnthropic;
use tollgate::server::fake::gemini::FakeGemini;
use tollgate::server::fake::FakeUpstream;

/// The key the strict fakes expect.
const KEY: &str = "e2e-provider-key";

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let openai = FakeUpstream::start("openai").await?;
    let anthropic = FakeAnthropic::start().await?;
    anthropic.expect_key(KEY);
    let gemini = FakeGemini::start().await?;
    println!("openai {}", openai.base_url());
    println!("anthropic {}", anthropic.base_url());
    println!("gemini {}", gemini.base_url());
    // Flushed by println!'s newline only on a terminal: flush for a pipe.
    use std::io::Write;
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await
    .map_err(std::io::Error::other)?;
    Ok(())
}
