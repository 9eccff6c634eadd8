//! Placeholder until the anthropic format lands (replaced by the merge).
#![allow(missing_docs, unused_variables)]
use std::time::SystemTime;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value};

use super::{Answer, Call, Outbound, StreamTranslator};
use crate::exec::Failure;

pub const DEFAULT_VERSION: &str = "2023-06-01";
pub fn request(body: &Map<String, Value>, out: &Outbound) -> Result<Call, Failure> {
    Err(Failure::status(501))
}
pub fn response(bytes: &[u8]) -> Result<Answer, Failure> {
    Err(Failure::status(501))
}
pub fn failure(status: u16, headers: &HeaderMap, bytes: &[u8], now: SystemTime) -> Failure {
    Failure::status(status)
}
pub struct Stream;
impl Stream {
    pub fn new() -> Self {
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
pub fn chat_request(body: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    Err("not yet".into())
}
pub fn messages_response(chat_body: &[u8], model: &str) -> Result<Vec<u8>, String> {
    Err("not yet".into())
}
pub fn error_body(status: u16, message: &str) -> Vec<u8> {
    Vec::new()
}
pub struct MessagesEvents;
impl MessagesEvents {
    pub fn new(model: &str) -> Self {
        MessagesEvents
    }
    pub fn chunk(&mut self, openai_event: &[u8]) -> Vec<Bytes> {
        Vec::new()
    }
    pub fn finish(&mut self) -> Vec<Bytes> {
        Vec::new()
    }
}
