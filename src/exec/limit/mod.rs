//! Rate, token and concurrency limits (being written).
