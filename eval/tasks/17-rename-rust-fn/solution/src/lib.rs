//! Areas of simple shapes, and a text report about them.

pub mod report;
pub mod shapes;

pub use shapes::{area_of, Shape};
