//! Twilio's signature input: the URL it called (with or without the default port) and the
//! sorted form parameters, or a `bodySHA256` in the URL for JSON bodies.

use sha2::Sha256;

/// The URL a provider signed (Twilio, Trello): the configured one (with the request's query) or
/// the one called.
pub(super) fn signed_url(configured: Option<&str>, called: Option<&str>) -> Option<String> {
    let Some(base) = configured else {
        return called.map(str::to_owned);
    };
    let query = called.and_then(|c| c.split_once('?')).map(|(_, q)| q);
    Some(match query {
        Some(q) if !base.contains('?') => format!("{base}?{q}"),
        _ => base.to_owned(),
    })
}

/// What Twilio appends to the URL before signing: the form parameters, names sorted, each
/// name's distinct values sorted, as `name` + `value` (its `RequestValidator`). A JSON request
/// carries `bodySHA256` in the URL instead: the body must hash to it, and nothing is appended.
/// `None`: the body does not match its hash.
pub(super) fn twilio_params(url: &str, body: &[u8]) -> Option<String> {
    use sha2::Digest as _;
    let query = url.split_once('?').map_or("", |(_, q)| q);
    if let Some((_, hash)) =
        form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "bodySHA256")
    {
        let actual = hex::encode(Sha256::digest(body));
        return super::super::ct::eq(actual.as_bytes(), hash.as_bytes()).then(String::new);
    }
    let mut params: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        std::collections::BTreeMap::new();
    for (name, value) in form_urlencoded::parse(body) {
        params
            .entry(name.into_owned())
            .or_default()
            .insert(value.into_owned());
    }
    Some(
        params
            .iter()
            .flat_map(|(name, values)| values.iter().map(move |v| format!("{name}{v}")))
            .collect(),
    )
}

/// A URL without and with its scheme's default port: Twilio's back ends sign either way.
pub(super) fn url_port_variants(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return vec![url.to_owned()];
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    // The port follows the last `:` outside an IPv6 literal's brackets.
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let default = if scheme.eq_ignore_ascii_case("https") {
        "443"
    } else {
        "80"
    };
    let without = format!("{scheme}://{host}{path}");
    let with = format!("{scheme}://{host}:{}{path}", port.unwrap_or(default));
    if port.is_some_and(|p| p != default) {
        return vec![url.to_owned()];
    }
    vec![without, with]
}
