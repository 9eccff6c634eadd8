//! Placeholder until the gemini format lands (replaced by the merge).
#![allow(missing_docs, unused_variables)]
use std::time::SystemTime;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value};

use super::{Answer, Call, Outbound, StreamTranslator};
use crate::exec::Failure;

pub fn request(body: &Map<String, Value>, out: &Outbound) -> Result<Call, Failure> {
    Err(Failure::status(501))
}
pub fn response(bytes: &[u8], model: &str) -> Result<Answer, Failure> {
    Err(Failure::status(501))
}
pub fn failure(status: u16, headers: &HeaderMap, bytes: &[u8], now: SystemTime) -> Failure {
    Failure::status(status)
}
pub struct Stream;
impl Stream {
    pub fn new(model: &str) -> Self {
        Stream
    }
}
impl StreamTranslator for Stream {
    fn event(&mut self, raw: &[u8]) -> Vec<Bytes> {
        Vec::new()
    }
    fn finish(&mut self) -> Vec<Bytes> {
        Vec::new()
    }
}
