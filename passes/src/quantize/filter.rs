//! Node filters: lists of node names or regular expressions, as the quantization passes'
//! `nodes_to_exclude` and `nodes_to_include` take them.

use regex::Regex;

/// Node names or regular expressions. An entry matches a node whose name equals it or
/// matches it as a whole as a regular expression.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeFilter {
    entries: Vec<(String, Option<Regex>)>,
}

impl NodeFilter {
    /// A filter where an entry that is no valid regular expression is a plain name.
    pub(crate) fn new(entries: &[String]) -> Self {
        let entries =
            entries.iter().map(|entry| (entry.clone(), whole_match(entry).ok())).collect();
        NodeFilter { entries }
    }

    /// A filter whose every entry must be a valid regular expression; the error names the
    /// first entry that is not, and why.
    pub(crate) fn strict(entries: &[String]) -> Result<Self, String> {
        let entries = entries
            .iter()
            .map(|entry| match whole_match(entry) {
                Ok(regex) => Ok((entry.clone(), Some(regex))),
                Err(error) => Err(format!("`{entry}` is no valid regular expression: {error}")),
            })
            .collect::<Result<_, _>>()?;
        Ok(NodeFilter { entries })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        self.entries.iter().any(|(entry, regex)| Self::entry_matches(entry, regex, name))
    }

    /// The entries that match none of `names`.
    pub(crate) fn unmatched(&self, names: &[&str]) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(entry, regex)| !names.iter().any(|n| Self::entry_matches(entry, regex, n)))
            .map(|(entry, _)| entry.as_str())
            .collect()
    }

    fn entry_matches(entry: &str, regex: &Option<Regex>, name: &str) -> bool {
        entry == name || regex.as_ref().is_some_and(|r| r.is_match(name))
    }
}

/// `pattern` as a regular expression that must match a whole name.
pub(crate) fn whole_match(pattern: &str) -> Result<Regex, regex::Error> {
    // Compiled alone first, so that an error quotes the pattern as the user wrote it.
    Regex::new(pattern)?;
    Regex::new(&format!("^(?:{pattern})$"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_filters_match_names_and_whole_regular_expressions() {
        let entries = ["conv[0-9]".to_string(), "a(b".into(), "x.y".into()];
        let filter = NodeFilter::new(&entries);

        assert!(
            filter.matches("conv1") && !filter.matches("conv12") && !filter.matches("my_conv1")
        );
        assert!(filter.matches("a(b"), "an entry that is no regular expression is a name");
        assert!(filter.matches("x.y") && filter.matches("xzy"));
        assert_eq!(filter.unmatched(&["conv1", "other"]), ["a(b", "x.y"]);
        assert!(NodeFilter::new(&[]).is_empty() && !NodeFilter::new(&[]).matches("conv1"));
    }

    #[test]
    fn strict_filters_refuse_invalid_regular_expressions() {
        let err = NodeFilter::strict(&["ok".into(), "a(b".into()]).unwrap_err();
        assert!(err.contains("`a(b`") && err.contains("no valid regular expression"), "{err}");
        let filter = NodeFilter::strict(&["fc[12]".into()]).unwrap();
        assert!(filter.matches("fc1") && !filter.matches("fc3"));
    }
}
