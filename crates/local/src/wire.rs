//! The AWS wire formats the local stack reads and writes by hand: the
//! Query protocol's form-encoded bodies and XML text.

/// One field of a form-encoded body.
pub(crate) fn form_value(body: &[u8], key: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// A Query-protocol list (`Instances.member.2.InstanceId=...`), in the
/// order its members are numbered.
pub(crate) fn form_list(form: &[(String, String)], prefix: &str, suffix: &str) -> Vec<String> {
    let mut items: Vec<(usize, String)> = form
        .iter()
        .filter_map(|(k, v)| {
            let n = k.strip_prefix(prefix)?.strip_suffix(suffix)?;
            Some((n.parse().ok()?, v.clone()))
        })
        .collect();
    items.sort();
    items.into_iter().map(|(_, v)| v).collect()
}

/// Text made safe inside an XML element or attribute.
pub(crate) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
