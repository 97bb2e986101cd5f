use super::*;

#[test]
fn merge_adds_and_overrides_without_dropping_siblings() {
    let base = json!({"Resources": {"A": {"Type": "X", "Properties": {"P": 1, "Q": 2}}}});
    let overlay = json!({"Resources": {"A": {"Properties": {"Q": 3}}, "B": {"Type": "Y"}}});
    let merged = crate::overlay::merge(base, overlay);
    assert_eq!(merged["Resources"]["A"]["Properties"], json!({"P": 1, "Q": 3}));
    assert_eq!(merged["Resources"]["A"]["Type"], "X");
    assert_eq!(merged["Resources"]["B"]["Type"], "Y");
}

#[test]
fn stack_names_are_stable_and_bounded() {
    assert_eq!(stack_name("hello", "prod", "abc123"), "hello-prod-abc123");
    assert_eq!(stack_name(&"s".repeat(200), "e", "v").len(), 128);
}
