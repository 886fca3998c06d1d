//! API calls that may be repeated safely: after a restart, a retry or a race with another
//! function of the same cache key, the object the operator creates may already exist (names
//! derive from content, so it is the same object) and the one it deletes may already be gone.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, PostParams, Preconditions};
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
    /// The name was held by what an earlier owner of the same kind and name left behind (an
    /// execution deleted and created again before the garbage collector removed its objects):
    /// that object is being deleted now; create again shortly.
    Leftover,
    /// An object of that name exists and belongs to someone else.
    Taken,
}

/// Whose an existing object (with `owners`) is, seen from `owner`. An object controlled by an
/// owner of the same kind and name but another uid was that owner's predecessor's: the
/// predecessor is gone, since a namespace holds one object of a name at a time.
pub fn ownership(owners: &[OwnerReference], owner: &OwnerReference) -> Owned {
    if owners.iter().any(|o| o.uid == owner.uid) {
        Owned::Ours
    } else if owners.iter().any(|o| {
        o.controller == Some(true)
            && o.kind == owner.kind
            && o.api_version == owner.api_version
            && o.name == owner.name
    }) {
        Owned::Leftover
    } else {
        Owned::Taken
    }
}

/// Creates `object` (controlled by `owner`) unless `owner` already created it. An object of
/// that name left by an earlier owner of the same kind and name is deleted ([`Owned::Leftover`]);
/// one owned by anyone else is reported, never adopted or touched.
pub async fn create_owned<K>(api: &Api<K>, object: &K, owner: &OwnerReference) -> Result<Owned>
where
    K: Clone + Debug + DeserializeOwned + Serialize + kube::Resource,
{
    if create_if_absent(api, object).await? {
        return Ok(Owned::Ours);
    }
    let name = object.meta().name.clone().unwrap_or_default();
    let Some(existing) = api.get_opt(&name).await? else {
        // Gone in between: the next attempt creates it.
        return Ok(Owned::Leftover);
    };
    let owners = existing.meta().owner_references.clone().unwrap_or_default();
    let found = ownership(&owners, owner);
    if found == Owned::Leftover {
        // Only that very object: should it be replaced meanwhile, the delete is refused.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: existing.meta().uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(found)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str, uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "wasmfn.dev/v1alpha1".into(),
            kind: "WasmExecution".into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn an_object_the_owner_made_is_ours() {
        let owner = reference("e", "u-2", true);
        assert_eq!(ownership(std::slice::from_ref(&owner), &owner), Owned::Ours);
    }

    #[test]
    fn an_object_an_earlier_owner_of_the_same_name_controlled_is_a_leftover() {
        let owner = reference("e", "u-2", true);
        assert_eq!(
            ownership(&[reference("e", "u-1", true)], &owner),
            Owned::Leftover
        );
    }

    #[test]
    fn objects_of_other_owners_or_not_controlled_by_the_predecessor_are_taken() {
        let owner = reference("e", "u-2", true);
        assert_eq!(ownership(&[], &owner), Owned::Taken);
        assert_eq!(
            ownership(&[reference("other", "u-1", true)], &owner),
            Owned::Taken
        );
        assert_eq!(
            ownership(&[reference("e", "u-1", false)], &owner),
            Owned::Taken,
            "a mere reference does not make it the predecessor's"
        );
        let mut other_kind = reference("e", "u-1", true);
        other_kind.kind = "Job".into();
        assert_eq!(ownership(&[other_kind], &owner), Owned::Taken);
    }
}
