//! Placeholder: a strict fake anthropic upstream (being written).
