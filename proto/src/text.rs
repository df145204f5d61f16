//! Text folding for search: lowercase, accents removed, punctuation turned to
//! spaces, so "Città" and "citta" match.

use unicode_normalization::UnicodeNormalization;

/// Folds text for matching: NFD-decomposes, drops combining marks, lowercases,
/// turns anything not alphanumeric into one space, trims.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last_space = true;
    for c in text.nfd() {
        if unicode_normalization::char::is_combining_mark(c) {
            continue;
        }
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
            last_space = false;
        } else if !last_space {
            out.push(' ');
            last_space = true;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn folds_case_accents_and_punctuation() {
        assert_eq!(fold("  Città, PERCHÉ  è così? "), "citta perche e cosi");
        assert_eq!(fold("Via dell'Università 12"), "via dell universita 12");
        assert_eq!(fold(""), "");
    }
}
