pub fn text() -> &'static str {
    "hello from cargo"
}
