//! Placeholder: a strict fake gemini upstream (being written).
