/// One page of a list: 1-based `page` of `size` items. Both are bounded, so the row offset the database
/// is asked for always fits (`(page - 1) × size` ≤ 10^8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    page: u64,
    size: u64,
}

/// `page` or `pageSize` out of range.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("page must be 1 to {max_page} and pageSize 1 to {max_size}", max_page = Paging::MAX_PAGE, max_size = Paging::MAX_SIZE)]
pub struct PagingError;

impl Paging {
    pub const MAX_PAGE: u64 = 1_000_000;
    pub const MAX_SIZE: u64 = 100;
    pub const DEFAULT_SIZE: u64 = 20;

    /// Reads the query's `page` (default 1) and `pageSize` (default 20).
    pub fn new(page: Option<u64>, size: Option<u64>) -> Result<Self, PagingError> {
        let page = page.unwrap_or(1);
        let size = size.unwrap_or(Self::DEFAULT_SIZE);
        if !(1..=Self::MAX_PAGE).contains(&page) || !(1..=Self::MAX_SIZE).contains(&size) {
            return Err(PagingError);
        }
        Ok(Paging { page, size })
    }

    pub fn page(self) -> u64 {
        self.page
    }

    pub fn size(self) -> u64 {
        self.size
    }

    /// The 0-based page index the paginator takes.
    pub fn index(self) -> u64 {
        self.page - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_to_the_first_page_of_twenty() {
        let p = Paging::new(None, None).unwrap();
        assert_eq!((p.page(), p.size(), p.index()), (1, 20, 0));
    }

    #[test]
    fn refuses_zero_and_huge_values() {
        assert_eq!(Paging::new(Some(0), None), Err(PagingError));
        assert_eq!(Paging::new(Some(9_223_372_036_854_775_809), Some(1)), Err(PagingError));
        assert_eq!(Paging::new(None, Some(0)), Err(PagingError));
        assert_eq!(Paging::new(None, Some(101)), Err(PagingError));
    }

    proptest! {
        #[test]
        fn any_accepted_page_has_an_offset_that_fits(page in any::<u64>(), size in any::<u64>()) {
            if let Ok(p) = Paging::new(Some(page), Some(size)) {
                let offset = p.index().checked_mul(p.size());
                prop_assert!(offset.is_some_and(|o| o <= 100_000_000 && i64::try_from(o).is_ok()));
            }
        }
    }
}
