// Hidden check: copied into tests/ by the task's check command.
use stack::Stack;

#[test]
fn eval_peek_returns_top_without_removing() {
    let mut s = Stack::new();
    assert_eq!(s.peek(), None);
    s.push("a".to_string());
    s.push("b".to_string());
    assert_eq!(s.peek(), Some(&"b".to_string()));
    assert_eq!(s.peek().map(|x| x.as_str()), Some("b"));
    assert_eq!(s.len(), 2);
    assert_eq!(s.pop(), Some("b".to_string()));
    assert_eq!(s.peek(), Some(&"a".to_string()));
    assert_eq!(s.pop(), Some("a".to_string()));
    assert_eq!(s.peek(), None);
    assert!(s.is_empty());
}

#[test]
fn eval_peek_through_shared_reference() {
    fn top(s: &Stack<i32>) -> Option<&i32> {
        s.peek()
    }
    let mut s = Stack::new();
    s.push(7);
    assert_eq!(top(&s), Some(&7));
    assert_eq!(s.len(), 1);
}
