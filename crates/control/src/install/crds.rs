//! The CustomResourceDefinitions Ferry installs: Istio's VirtualService and DestinationRule
//! (`networking.istio.io` v1, v1beta1, v1alpha3) and PeerAuthentication (`security.istio.io`
//! v1, v1beta1), with structural schemas generated from Ferry's model, and Ferry's own
//! RedisPolicy (`ferry.dev/v1alpha1`). Every version has the same schema (the versions differ
//! only in name), `v1` is stored, and `status` is free-form as in Istio's CRDs.

use std::collections::BTreeMap;

use ferry_model::ferry::RedisPolicySpec;
use ferry_model::istio::{DestinationRuleSpec, PeerAuthenticationSpec, VirtualServiceSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresources,
    CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use super::schema::structural_for;

/// Label that marks an object as installed by Ferry (so Ferry's CRDs are told from Istio's).
pub const PART_OF: (&str, &str) = ("app.kubernetes.io/part-of", "ferry");

/// One CRD Ferry knows how to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrdKind {
    /// API group.
    pub group: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
    /// Singular resource name.
    pub singular: &'static str,
    /// Short names for kubectl.
    pub short_names: &'static [&'static str],
    /// kubectl categories.
    pub categories: &'static [&'static str],
    /// Served versions, the stored one first.
    pub versions: &'static [&'static str],
    /// Whether Istio defines it (and Ferry skips it when Istio's is present).
    pub istio: bool,
}

impl CrdKind {
    /// `<plural>.<group>`, the CRD's name.
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

/// VirtualService.
pub const VIRTUAL_SERVICE: CrdKind = CrdKind {
    group: "networking.istio.io",
    kind: "VirtualService",
    plural: "virtualservices",
    singular: "virtualservice",
    short_names: &["vs"],
    categories: &["istio-io", "networking-istio-io"],
    versions: &["v1", "v1beta1", "v1alpha3"],
    istio: true,
};

/// DestinationRule.
pub const DESTINATION_RULE: CrdKind = CrdKind {
    group: "networking.istio.io",
    kind: "DestinationRule",
    plural: "destinationrules",
    singular: "destinationrule",
    short_names: &["dr"],
    categories: &["istio-io", "networking-istio-io"],
    versions: &["v1", "v1beta1", "v1alpha3"],
    istio: true,
};

/// PeerAuthentication.
pub const PEER_AUTHENTICATION: CrdKind = CrdKind {
    group: "security.istio.io",
    kind: "PeerAuthentication",
    plural: "peerauthentications",
    singular: "peerauthentication",
    short_names: &["pa"],
    categories: &["istio-io", "security-istio-io"],
    versions: &["v1", "v1beta1"],
    istio: true,
};

/// RedisPolicy.
pub const REDIS_POLICY: CrdKind = CrdKind {
    group: "ferry.dev",
    kind: "RedisPolicy",
    plural: "redispolicies",
    singular: "redispolicy",
    short_names: &["rp"],
    categories: &["ferry"],
    versions: &["v1alpha1"],
    istio: false,
};

/// Every CRD kind, in install order.
pub const ALL: [CrdKind; 4] = [
    VIRTUAL_SERVICE,
    DESTINATION_RULE,
    PEER_AUTHENTICATION,
    REDIS_POLICY,
];

/// The spec schema of `kind` (structural).
pub fn spec_schema(kind: &CrdKind) -> Value {
    let mut spec = match kind.kind {
        "VirtualService" => structural_for::<VirtualServiceSpec>(),
        "DestinationRule" => structural_for::<DestinationRuleSpec>(),
        "PeerAuthentication" => structural_for::<PeerAuthenticationSpec>(),
        _ => structural_for::<RedisPolicySpec>(),
    };
    if let Some(map) = spec.as_object_mut() {
        let what = match kind.kind {
            "VirtualService" => {
                "Configuration affecting traffic routing. See more details at: https://istio.io/docs/reference/config/networking/virtual-service.html"
            }
            "DestinationRule" => {
                "Configuration affecting load balancing, outlier detection, etc. See more details at: https://istio.io/docs/reference/config/networking/destination-rule.html"
            }
            "PeerAuthentication" => {
                "Peer authentication configuration for workloads. See more details at: https://istio.io/docs/reference/config/security/peer_authentication.html"
            }
            _ => {
                "Per-command telemetry and fault injection for the Redis traffic to one host (Ferry)."
            }
        };
        map.insert("description".into(), what.into());
    }
    spec
}

/// The whole `openAPIV3Schema` of `kind`.
pub fn object_schema(kind: &CrdKind) -> Value {
    json!({
        "type": "object",
        "description": format!("{} ({}). Read by Ferry's control plane.", kind.kind, kind.group),
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this representation of the object."},
            "kind": {"type": "string", "description": "Kind of the object."},
            "metadata": {"type": "object"},
            "spec": spec_schema(kind),
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        },
    })
}

fn columns(kind: &CrdKind) -> Vec<CustomResourceColumnDefinition> {
    let column =
        |name: &str, type_: &str, path: &str, description: &str| CustomResourceColumnDefinition {
            name: name.into(),
            type_: type_.into(),
            json_path: path.into(),
            description: Some(description.into()),
            ..Default::default()
        };
    let mut out = match kind.kind {
        "VirtualService" => vec![
            column(
                "Gateways",
                "string",
                ".spec.gateways",
                "The names of gateways and sidecars that should apply these routes",
            ),
            column(
                "Hosts",
                "string",
                ".spec.hosts",
                "The destination hosts to which traffic is being sent",
            ),
        ],
        "DestinationRule" | "RedisPolicy" => vec![column(
            "Host",
            "string",
            ".spec.host",
            "The name of a service from the service registry",
        )],
        _ => vec![column(
            "Mode",
            "string",
            ".spec.mtls.mode",
            "Defines the mTLS mode used for peer authentication.",
        )],
    };
    out.push(column(
        "Age",
        "date",
        ".metadata.creationTimestamp",
        "Time since the object was created",
    ));
    out
}

/// The CRD of `kind`, labelled with `labels` (plus [`PART_OF`]) and kept by Helm on
/// uninstall (`helm.sh/resource-policy: keep`), since deleting a CRD deletes every resource
/// of its kind.
pub fn crd(kind: &CrdKind, labels: &BTreeMap<String, String>) -> CustomResourceDefinition {
    // The schema is built from our own types; it always converts.
    let schema: JSONSchemaProps = serde_json::from_value(object_schema(kind)).unwrap_or_default();
    let versions = kind
        .versions
        .iter()
        .enumerate()
        .map(|(i, name)| CustomResourceDefinitionVersion {
            name: name.to_string(),
            served: true,
            storage: i == 0,
            schema: Some(CustomResourceValidation {
                open_api_v3_schema: Some(schema.clone()),
            }),
            subresources: Some(CustomResourceSubresources {
                status: Some(Default::default()),
                scale: None,
            }),
            additional_printer_columns: Some(columns(kind)),
            ..Default::default()
        })
        .collect();
    let mut labels = labels.clone();
    labels.insert(PART_OF.0.into(), PART_OF.1.into());
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(kind.crd_name()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                "helm.sh/resource-policy".to_string(),
                "keep".to_string(),
            )])),
            ..Default::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: kind.group.into(),
            names: CustomResourceDefinitionNames {
                kind: kind.kind.into(),
                list_kind: Some(format!("{}List", kind.kind)),
                plural: kind.plural.into(),
                singular: Some(kind.singular.into()),
                short_names: Some(kind.short_names.iter().map(|s| s.to_string()).collect()),
                categories: Some(kind.categories.iter().map(|s| s.to_string()).collect()),
            },
            scope: "Namespaced".into(),
            versions,
            conversion: None,
            preserve_unknown_fields: None,
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::schema::violations;

    #[test]
    fn every_schema_is_structural_and_round_trips_through_the_typed_crd() {
        for kind in ALL {
            let schema = object_schema(&kind);
            assert!(
                violations(&schema).is_empty(),
                "{}: {:?}",
                kind.kind,
                violations(&schema)
            );
            let crd = crd(&kind, &BTreeMap::new());
            let typed = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .map(|s| serde_json::to_value(s).unwrap());
            assert_eq!(typed, Some(schema), "{}", kind.kind);
        }
    }

    #[test]
    fn enums_and_maps_come_through() {
        let pa = spec_schema(&PEER_AUTHENTICATION);
        assert_eq!(
            pa["properties"]["mtls"]["properties"]["mode"]["enum"],
            json!(["UNSET", "DISABLE", "PERMISSIVE", "STRICT"])
        );
        assert_eq!(
            pa["properties"]["portLevelMtls"]["type"],
            json!("object"),
            "{pa:#}"
        );
        let vs = spec_schema(&VIRTUAL_SERVICE);
        assert_eq!(
            vs["properties"]["http"]["items"]["properties"]["timeout"]["type"],
            json!("string")
        );
        assert!(
            vs["properties"]["hosts"]["items"]["type"] == "string",
            "{vs:#}"
        );
    }
}
