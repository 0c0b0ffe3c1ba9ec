//! Who an external token is, as the gateway names it: a template over the token's claims
//! (`{repository}@{ref}`, `{sub}`), and the patterns of principals allowed to ask.

use serde_json::{Map, Value};

/// A principal template: literal text and `{claim}` references. A claim path may go into
/// objects with dots (`{kubernetes.io.namespace}`); a key that itself contains dots
/// (`kubernetes.io`) is found whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Claim(String),
}

impl PrincipalTemplate {
    pub fn parse(template: &str) -> Result<PrincipalTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed {{ in \"{template}\""))?;
            let claim = &rest[open + 1..open + close];
            if claim.is_empty() || claim.contains('{') {
                return Err(format!("empty or nested claim reference in \"{template}\""));
            }
            parts.push(Part::Claim(claim.to_owned()));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unopened }} in \"{template}\""));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Claim(_))) {
            return Err(format!("\"{template}\" names no claim"));
        }
        Ok(PrincipalTemplate { parts })
    }

    /// The principal of a token with `claims`; an error names a claim that is missing, empty
    /// or not a string or number, or one whose value could pass for another principal: a
    /// value holding the template's own separators (`@` in `{repository}@{ref}`: a branch
    /// named `x@refs/heads/main` must not read as `main`), a pattern's `*`, or a control
    /// character.
    pub fn render(&self, claims: &Map<String, Value>) -> Result<String, String> {
        let separators: Vec<char> = self
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(text) => Some(text.chars()),
                Part::Claim(_) => None,
            })
            .flatten()
            .collect();
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Claim(path) => {
                    let value = match claim(claims, path) {
                        Some(Value::String(s)) if !s.is_empty() => s.clone(),
                        Some(Value::Number(n)) => n.to_string(),
                        _ => return Err(format!("the token has no usable claim {path}")),
                    };
                    if value
                        .chars()
                        .any(|c| c == '*' || c.is_control() || separators.contains(&c))
                    {
                        return Err(format!(
                            "claim {path} holds a character that would make the principal ambiguous"
                        ));
                    }
                    out.push_str(&value);
                }
            }
        }
        Ok(out)
    }
}

/// The value at a dotted `path` in `claims`, keys containing dots found whole (longest first).
pub fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut split = path.len();
    while let Some(dot) = path[..split].rfind('.') {
        if let Some(Value::Object(inner)) = claims.get(&path[..dot])
            && let Some(value) = claim(inner, &path[dot + 1..])
        {
            return Some(value);
        }
        split = dot;
    }
    None
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (none included)
/// and everything else matches itself.
pub fn matches_pattern(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn templates_render_claims_including_keys_with_dots() {
        let github = claims(json!({"repository": "acme/api", "ref": "refs/heads/main", "run": 7}));
        let t = PrincipalTemplate::parse("{repository}@{ref}").unwrap();
        assert_eq!(t.render(&github).unwrap(), "acme/api@refs/heads/main");
        let t = PrincipalTemplate::parse("run-{run}").unwrap();
        assert_eq!(t.render(&github).unwrap(), "run-7");
        let k8s = claims(
            json!({"kubernetes.io": {"namespace": "jobs", "serviceaccount": {"name": "etl"}}}),
        );
        let t = PrincipalTemplate::parse(
            "{kubernetes.io.namespace}/{kubernetes.io.serviceaccount.name}",
        )
        .unwrap();
        assert_eq!(t.render(&k8s).unwrap(), "jobs/etl");
        assert!(
            PrincipalTemplate::parse("{sub}")
                .unwrap()
                .render(&k8s)
                .is_err()
        );
        let empty = claims(json!({"sub": ""}));
        assert!(
            PrincipalTemplate::parse("{sub}")
                .unwrap()
                .render(&empty)
                .is_err()
        );
        let nested = claims(json!({"sub": {"x": 1}}));
        assert!(
            PrincipalTemplate::parse("{sub}")
                .unwrap()
                .render(&nested)
                .is_err()
        );
        // A branch named to end like another one, a star, a newline: no principal.
        let t = PrincipalTemplate::parse("{repository}@{ref}").unwrap();
        let forged =
            claims(json!({"repository": "acme/api", "ref": "refs/heads/x@refs/heads/main"}));
        assert!(t.render(&forged).is_err());
        let star = claims(json!({"repository": "acme/*", "ref": "refs/heads/main"}));
        assert!(t.render(&star).is_err());
        let newline = claims(json!({"sub": "bot\nadmin"}));
        assert!(
            PrincipalTemplate::parse("{sub}")
                .unwrap()
                .render(&newline)
                .is_err()
        );
        for bad in ["sub", "{sub", "sub}", "{}", "{{sub}}"] {
            assert!(PrincipalTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_match_whole_principals_with_stars_for_any_run() {
        assert!(matches_pattern("repo:acme/*", "repo:acme/api"));
        assert!(matches_pattern("*", "anything"));
        assert!(matches_pattern(
            "acme/*@refs/heads/main",
            "acme/api@refs/heads/main"
        ));
        assert!(!matches_pattern(
            "acme/*@refs/heads/main",
            "acme/api@refs/heads/dev"
        ));
        assert!(!matches_pattern("acme/api", "acme/api2"));
        assert!(!matches_pattern("acme/*", "evil/acme/api"));
        assert!(matches_pattern("a*b*c", "abc"));
        assert!(!matches_pattern("a*bc", "abcbd"));
        assert!(matches_pattern(
            "system:serviceaccount:jobs:*",
            "system:serviceaccount:jobs:etl"
        ));
    }
}
