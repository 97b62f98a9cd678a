//! A link's labels for people: a title and tags. Tags are stored in lower case, so that
//! "Launch" and "launch" are one tag, and kept to a small alphabet so they read the same in a
//! URL's query (`?tag=`), a CSV column (`|`-separated) and a log line. The bounds are checked
//! on what was sent, as `openapi.yaml` states them.

use crate::store::MAX_TAGS;

/// Longest title, in characters.
pub const MAX_TITLE_LEN: usize = 200;
/// Longest tag, in characters.
pub const MAX_TAG_LEN: usize = 40;

/// The title to store: at most [`MAX_TITLE_LEN`] characters as sent, no control characters;
/// stored trimmed, `None` when that leaves nothing.
pub fn normalise_title(title: &str) -> Result<Option<String>, String> {
    if title.chars().count() > MAX_TITLE_LEN {
        return Err(format!("title must be at most {MAX_TITLE_LEN} characters"));
    }
    if title.chars().any(char::is_control) {
        return Err("title must not contain control characters (such as a line break)".into());
    }
    let title = title.trim();
    Ok(Some(title.to_owned()).filter(|t| !t.is_empty()))
}

/// One tag: 1 to [`MAX_TAG_LEN`] ASCII letters, digits, `-`, `_`, `.` or `:`, stored in lower
/// case.
pub fn normalise_tag(tag: &str) -> Result<String, String> {
    let length = tag.chars().count();
    if length == 0 || length > MAX_TAG_LEN {
        return Err(format!(
            "a tag must be 1 to {MAX_TAG_LEN} characters; got '{}'",
            tag.escape_default()
        ));
    }
    if let Some(bad) = tag
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(format!(
            "a tag may hold ASCII letters, digits, '-', '_', '.' and ':'; '{}' has '{}'",
            tag.escape_default(),
            bad.escape_default()
        ));
    }
    Ok(tag.to_ascii_lowercase())
}

/// The tags to store: at most [`MAX_TAGS`] as sent, each normalised, duplicates dropped (the
/// first kept).
pub fn normalise_tags<S: AsRef<str>>(tags: &[S]) -> Result<Vec<String>, String> {
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "a link carries at most {MAX_TAGS} tags; got {}",
            tags.len()
        ));
    }
    let mut normal: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = normalise_tag(tag.as_ref())?;
        if !normal.contains(&tag) {
            normal.push(tag);
        }
    }
    Ok(normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_trimmed_lowercased_and_deduplicated() {
        assert_eq!(
            normalise_tags(&["Launch", "launch", "Q3:2026", "v1.2_rc-1"]),
            Ok(vec!["launch".into(), "q3:2026".into(), "v1.2_rc-1".into()])
        );
        assert!(normalise_tags(&["a b"]).is_err());
        assert!(
            normalise_tags(&[" launch"]).is_err(),
            "as the API's pattern says"
        );
        assert!(normalise_tags(&["été"]).is_err());
        assert!(normalise_tags(&["a|b"]).is_err(), "the CSV separator");
        assert!(normalise_tags(&[""]).is_err());
        assert!(normalise_tags(&["x".repeat(MAX_TAG_LEN + 1)]).is_err());
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert!(normalise_tags(&many).is_err());
        assert_eq!(
            normalise_tags(&many[..MAX_TAGS]).map(|t| t.len()),
            Ok(MAX_TAGS)
        );
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(
            normalise_title("  Spring sale "),
            Ok(Some("Spring sale".into()))
        );
        assert!(normalise_title(&format!("{} ", "x".repeat(MAX_TITLE_LEN))).is_err());
        assert_eq!(normalise_title("   "), Ok(None));
        assert!(normalise_title("a\nb").is_err());
        assert!(normalise_title(&"é".repeat(MAX_TITLE_LEN + 1)).is_err());
        assert!(normalise_title(&"é".repeat(MAX_TITLE_LEN)).is_ok());
    }
}
