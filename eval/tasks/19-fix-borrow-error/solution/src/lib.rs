//! A small stock list.

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub name: String,
    pub qty: u32,
}

#[derive(Debug, Default)]
pub struct Inventory {
    items: Vec<Item>,
}

impl Inventory {
    pub fn new() -> Self {
        Inventory { items: Vec::new() }
    }

    /// Add `qty` units of `name`, creating the item if needed.
    pub fn add(&mut self, name: &str, qty: u32) {
        match self.items.iter_mut().find(|item| item.name == name) {
            Some(item) => item.qty += qty,
            None => self.items.push(Item { name: name.to_string(), qty }),
        }
    }

    /// Take `qty` units of `name` out of stock; false if there are not enough.
    pub fn take(&mut self, name: &str, qty: u32) -> bool {
        match self.items.iter_mut().find(|item| item.name == name) {
            Some(item) if item.qty >= qty => {
                item.qty -= qty;
                true
            }
            _ => false,
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.items.retain(|item| item.name != name);
    }

    pub fn names(&self) -> Vec<&str> {
        self.items.iter().map(|item| item.name.as_str()).collect()
    }

    /// Remove every item whose quantity is zero and return their names,
    /// in the order they were listed.
    pub fn remove_empty(&mut self) -> Vec<String> {
        let removed: Vec<String> = self
            .items
            .iter()
            .filter(|item| item.qty == 0)
            .map(|item| item.name.clone())
            .collect();
        self.items.retain(|item| item.qty != 0);
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_empty_items() {
        let mut inv = Inventory::new();
        inv.add("apple", 3);
        inv.add("pear", 1);
        inv.add("plum", 2);
        assert!(inv.take("pear", 1));
        assert_eq!(inv.remove_empty(), vec!["pear".to_string()]);
        assert_eq!(inv.names(), vec!["apple", "plum"]);
    }
}
