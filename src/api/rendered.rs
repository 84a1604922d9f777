//! The JSON of each task's view, rendered once per change and then served as bytes, as the
//! apiserver's `cachingObject` serves an object's encoding.
//!
//! A task's view joins two caches: the resource and its worker's status report. A rendering is
//! kept with the mod revisions of both and is good exactly while both still hold them, so no
//! change has to invalidate it. Why a task waits depends on the whole fleet, not on those two:
//! a task that waits is rendered afresh each time (it is rare, and nothing is cached for it).
//!
//! Renderings of deleted or changed tasks are swept out whenever the memo has doubled since the
//! last sweep, and the memo holds at most `http.rendered_cache_bytes`: reading every page of a
//! million tasks must not keep a million renderings.

use std::collections::HashMap;
use std::sync::RwLock;

use axum::body::Bytes;

use super::AppState;
use super::constraints::WaitingView;
use super::resource_view::ResourceView;
use crate::etcd::cache::{Entry, Name, Store};
use crate::model::resource::Resource;
use crate::model::status::TaskStatus;

/// One task of a page: its resource, its worker's report, and why it waits, if it does.
pub struct Row {
    /// The resource.
    pub resource: Entry<Resource>,
    /// Its worker's report, if any.
    pub reported: Option<Entry<TaskStatus>>,
    /// Why it waits, when it does.
    pub waiting: Option<WaitingView>,
}

impl Row {
    /// The row's view as JSON: kept from an earlier read while neither the resource nor its
    /// report changed, unless the task waits (why depends on the whole fleet).
    pub fn render(self, state: &AppState) -> Result<Bytes, serde_json::Error> {
        let Row {
            resource,
            reported,
            waiting,
        } = self;
        let reported_value = reported.as_ref().map(|e| &*e.value);
        let view = |waiting| {
            let view = ResourceView::joined(
                &resource.value,
                resource.mod_revision,
                reported_value,
                waiting,
            );
            serde_json::to_vec(&view).map(Bytes::from)
        };
        if waiting.is_some() {
            return view(waiting);
        }
        let versions = (
            resource.mod_revision,
            reported.as_ref().map_or(0, |e| e.mod_revision),
        );
        state.rendered.get_or_render(
            &resource.value.name,
            versions,
            || view(None),
            &state.resources,
        )
    }
}

/// The mod revisions a rendering was made from: the resource's, and its status report's
/// (0 without one).
pub type Versions = (i64, i64);

struct Piece {
    versions: Versions,
    body: Bytes,
}

impl Piece {
    /// What it holds, its name and the map's own share included.
    fn cost(name: &Name, body: &Bytes) -> usize {
        name.len() + body.len() + 64
    }
}

struct Memo {
    pieces: HashMap<Name, Piece>,
    /// The pieces' costs, summed.
    bytes: usize,
    /// Pieces to hold before the next sweep.
    sweep_at: usize,
}

/// Rendered views by task name, at most about `limit` bytes of them.
pub struct Rendered {
    memo: RwLock<Memo>,
    limit: usize,
}

/// The fewest pieces a sweep waits for.
const FIRST_SWEEP: usize = 1024;

impl Rendered {
    /// A memo holding at most about `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            memo: RwLock::new(Memo {
                pieces: HashMap::new(),
                bytes: 0,
                sweep_at: FIRST_SWEEP,
            }),
            limit,
        }
    }

    /// The rendering of `name` at `versions`, made by `render` unless one is kept.
    pub fn get_or_render(
        &self,
        name: &Name,
        versions: Versions,
        render: impl FnOnce() -> Result<Bytes, serde_json::Error>,
        resources: &Store<Resource>,
    ) -> Result<Bytes, serde_json::Error> {
        {
            let memo = self.memo.read().unwrap_or_else(|p| p.into_inner());
            if let Some(piece) = memo.pieces.get(name)
                && piece.versions == versions
            {
                return Ok(piece.body.clone());
            }
        }
        let body = render()?;
        let mut guard = self.memo.write().unwrap_or_else(|p| p.into_inner());
        let memo = &mut *guard;
        memo.bytes += Piece::cost(name, &body);
        let piece = Piece {
            versions,
            body: body.clone(),
        };
        if let Some(old) = memo.pieces.insert(name.clone(), piece) {
            memo.bytes -= Piece::cost(name, &old.body);
        }
        if memo.pieces.len() >= memo.sweep_at || memo.bytes > self.limit {
            self.sweep(memo, resources);
        }
        Ok(body)
    }

    /// Drops the renderings of tasks gone or changed; then, while over the limit, a random
    /// half of the rest at a time (a random choice keeps what is read often about as well as
    /// least-recently-used does, at no cost per read).
    fn sweep(&self, memo: &mut Memo, resources: &Store<Resource>) {
        let Memo { pieces, bytes, .. } = memo;
        resources.with(|objects, _| {
            pieces.retain(|name, piece| {
                let good = objects
                    .get(name)
                    .is_some_and(|e| e.mod_revision == piece.versions.0);
                if !good {
                    *bytes -= Piece::cost(name, &piece.body);
                }
                good
            });
        });
        let target = self.limit / 4 * 3;
        while *bytes > target {
            pieces.retain(|name, piece| {
                if *bytes <= target || rand::random::<bool>() {
                    return true;
                }
                *bytes -= Piece::cost(name, &piece.body);
                false
            });
        }
        memo.sweep_at = (memo.pieces.len() * 2).max(FIRST_SWEEP);
    }
}

#[cfg(test)]
impl Rendered {
    /// Renderings held.
    fn len(&self) -> usize {
        self.memo
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .pieces
            .len()
    }

    /// Bytes held, by the memo's own count.
    fn bytes(&self) -> usize {
        self.memo.read().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::cache::Objects;
    use std::sync::Arc;

    fn store(names: &[(&str, i64)]) -> Store<Resource> {
        let (store, writer) = Store::new("resources");
        writer.replace(objects(names), 10);
        store
    }

    fn objects(names: &[(&str, i64)]) -> Objects<Resource> {
        names
            .iter()
            .map(|(n, rev)| {
                let name: Name = Name::from(*n);
                let value = Resource {
                    id: 1.into(),
                    name: name.clone(),
                    assigned_node: Name::from(""),
                    creation_time: 0,
                    extra: Default::default(),
                };
                (
                    name,
                    Entry {
                        value: Arc::new(value),
                        create_revision: *rev,
                        mod_revision: *rev,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_rendering_is_reused_only_at_the_same_versions() {
        let rendered = Rendered::new(1 << 30);
        let none = store(&[]);
        let name = Name::from("a");
        let mut renders = 0;
        for (versions, expect_render) in [
            ((1, 0), true),
            ((1, 0), false),
            ((1, 5), true),
            ((2, 5), true),
            ((2, 5), false),
        ] {
            let before = renders;
            let body = rendered
                .get_or_render(
                    &name,
                    versions,
                    || {
                        renders += 1;
                        Ok(Bytes::from(format!("{versions:?}")))
                    },
                    &none,
                )
                .expect("rendered");
            assert_eq!(body, Bytes::from(format!("{versions:?}")));
            assert_eq!(renders > before, expect_render, "{versions:?}");
        }
    }

    #[test]
    fn a_sweep_keeps_only_what_is_still_good() {
        let rendered = Rendered::new(1 << 30);
        let live: Vec<(String, i64)> = (0..FIRST_SWEEP).map(|i| (format!("t{i}"), 7)).collect();
        // Half the tasks are still there at the rendered revision; the rest changed or left.
        let kept: Vec<(&str, i64)> = live
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.as_str(), if i % 2 == 0 { 7 } else { 8 }))
            .collect();
        let now = store(&kept);
        for (n, rev) in &live {
            rendered
                .get_or_render(
                    &Name::from(n.as_str()),
                    (*rev, 0),
                    || Ok(Bytes::new()),
                    &now,
                )
                .expect("rendered");
        }
        assert_eq!(rendered.len(), FIRST_SWEEP / 2);
    }

    #[test]
    fn the_memo_stays_within_its_bytes() {
        let limit = 64 * 1024;
        let rendered = Rendered::new(limit);
        let names: Vec<String> = (0..2_000).map(|i| format!("t{i}")).collect();
        let live: Vec<(&str, i64)> = names.iter().map(|n| (n.as_str(), 7)).collect();
        let now = store(&live);
        let body = Bytes::from(vec![b'x'; 400]);
        for n in &names {
            let got = rendered
                .get_or_render(&Name::from(n.as_str()), (7, 0), || Ok(body.clone()), &now)
                .expect("rendered");
            assert_eq!(got, body);
            assert!(rendered.bytes() <= limit, "{} bytes held", rendered.bytes());
        }
        // Still useful: a good share of the limit is kept.
        assert!(
            rendered.bytes() > limit / 4,
            "{} bytes held",
            rendered.bytes()
        );
    }
}
