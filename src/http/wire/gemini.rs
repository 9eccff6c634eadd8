//! Placeholder: the gemini format (being written).
