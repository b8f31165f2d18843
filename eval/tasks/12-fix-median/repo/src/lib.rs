//! Simple descriptive statistics over integer samples.

/// The arithmetic mean, or `None` for an empty slice.
pub fn mean(values: &[i64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    Some(values.iter().sum::<i64>() as f64 / values.len() as f64)
}

/// The median, or `None` for an empty slice. For an even number of values
/// it is the mean of the two middle values.
pub fn median(values: &[i64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        Some(sorted[mid] as f64)
    } else {
        Some((sorted[mid] + sorted[mid + 1]) as f64 / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_of_values() {
        assert_eq!(mean(&[1, 2, 3, 4]), Some(2.5));
        assert_eq!(mean(&[]), None);
    }

    #[test]
    fn median_odd() {
        assert_eq!(median(&[5, 1, 3]), Some(3.0));
    }

    #[test]
    fn median_even() {
        assert_eq!(median(&[4, 1, 3, 2]), Some(2.5));
        assert_eq!(median(&[10, 20]), Some(15.0));
    }
}
