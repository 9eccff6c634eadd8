//! Placeholder: the anthropic format (being written).
