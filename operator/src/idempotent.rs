//! API calls that may be repeated safely: after a restart, a retry or a race with another
//! function of the same cache key, the object the operator creates may already exist (names
//! derive from content, so it is the same object) and the one it deletes may already be gone.

use std::fmt::Debug;

use kube::api::{DeleteParams, PostParams};
use kube::Api;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Result;

/// Creates `object` unless an object of that name exists; returns whether it was created.
pub async fn create_if_absent<K>(api: &Api<K>, object: &K) -> Result<bool>
where
    K: Clone + Debug + DeserializeOwned + Serialize,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// What [`create_owned`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Owned {
    /// Created now, or created earlier by the same owner.
    Ours,
    /// An object of that name exists and belongs to someone else.
    Taken,
}

/// Creates `object` unless the same owner (`owner_uid`) already created it; an object of that
/// name owned by anyone else is reported, never adopted.
pub async fn create_owned<K>(api: &Api<K>, object: &K, owner_uid: &str) -> Result<Owned>
where
    K: Clone + Debug + DeserializeOwned + Serialize + kube::Resource,
{
    if create_if_absent(api, object).await? {
        return Ok(Owned::Ours);
    }
    let name = object.meta().name.clone().unwrap_or_default();
    let existing = api.get_opt(&name).await?;
    let ours = existing.is_some_and(|e| {
        e.meta()
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == owner_uid)
    });
    Ok(if ours { Owned::Ours } else { Owned::Taken })
}

/// Deletes `name` with `params` unless it is already gone.
pub async fn delete_if_present<K>(api: &Api<K>, name: &str, params: &DeleteParams) -> Result<()>
where
    K: Clone + Debug + DeserializeOwned,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}
