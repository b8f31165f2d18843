// Hidden check: copied into tests/ by the task's check command.
use inventory::Inventory;

#[test]
fn eval_remove_empty_adjacent_and_order() {
    let mut inv = Inventory::new();
    for (name, qty) in [("a", 0), ("b", 0), ("c", 5), ("d", 0), ("e", 1), ("f", 0)] {
        inv.add(name, qty);
    }
    assert_eq!(inv.remove_empty(), vec!["a", "b", "d", "f"]);
    assert_eq!(inv.names(), vec!["c", "e"]);
    assert_eq!(inv.remove_empty(), Vec::<String>::new());
    assert_eq!(inv.names(), vec!["c", "e"]);
}

#[test]
fn eval_remove_empty_after_take() {
    let mut inv = Inventory::new();
    inv.add("apple", 3);
    inv.add("pear", 1);
    assert!(inv.take("apple", 3));
    assert!(!inv.take("pear", 2));
    assert_eq!(inv.remove_empty(), vec!["apple".to_string()]);
    assert_eq!(inv.names(), vec!["pear"]);
}
