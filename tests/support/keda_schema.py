"""JSON schemas for the subset of KEDA's custom resources that deploy/k8s uses, written for these tests.

Written from KEDA's documented field lists (keda-docs, docs version 2.21):
- ScaledObject: content/docs/2.21/reference/scaledobject-spec.md (scaleTargetRef, pollingInterval,
  cooldownPeriod, initialCooldownPeriod, idleReplicaCount, minReplicaCount, maxReplicaCount, fallback,
  advanced.restoreToOriginalReplicaCount / horizontalPodAutoscalerConfig / scalingModifiers, triggers);
- trigger metadata: content/docs/2.21/scalers/metrics-api.md and content/docs/2.20/scalers/redis-lists.md;
- TriggerAuthentication: content/docs/2.21/concepts/authentication.md.

They are stricter than the CRDs in one way on purpose: unknown fields are errors (the API server would
prune them silently, so a misspelt `minReplicaCounts` would deploy and do nothing). Trigger metadata is a
map of strings, as in KEDA's Go types (`map[string]string`), so `targetValue: 1` unquoted is refused.
`advanced.horizontalPodAutoscalerConfig.behavior` is checked by the tests against Kubernetes' own
HorizontalPodAutoscalerBehavior schema instead.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
_COUNT: Schema = {"type": "integer", "minimum": 0}


def _object(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
    "additionalProperties": False,
}


def _metadata_keys(keys: dict[str, Schema], required: tuple[str, ...]) -> Schema:
    return {
        "type": "object",
        "properties": keys,
        "required": list(required),
        "additionalProperties": False,
    }


_STRING: Schema = {"type": "string"}
_BOOL_STRING: Schema = {"enum": ["true", "false"]}
_NUMBER_STRING: Schema = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"}

# scalers/metrics-api.md: "Parameter list" and "Authentication Parameters" (the ones set in trigger metadata)
METRICS_API_METADATA = _metadata_keys(
    {
        "url": {"type": "string", "pattern": "^https?://"},
        "format": {"enum": ["json", "xml", "yaml", "prometheus"]},
        "valueLocation": _STRING,
        "targetValue": _NUMBER_STRING,
        "activationTargetValue": _NUMBER_STRING,
        "unsafeSsl": _BOOL_STRING,
        "timeout": _STRING,
        "aggregateFromKubeServiceEndpoints": _BOOL_STRING,
        "aggregationType": {"enum": ["average", "sum", "max", "min"]},
        "authMode": _STRING,
        "method": {"enum": ["header", "query"]},
        "keyParamName": _STRING,
    },
    ("url", "valueLocation", "targetValue"),
)

# scalers/redis-lists.md: "Parameter list" (the `redis` trigger)
REDIS_LIST_METADATA = _metadata_keys(
    {
        "address": _STRING,
        "host": _STRING,
        "port": _STRING,
        "usernameFromEnv": _STRING,
        "passwordFromEnv": _STRING,
        "listName": _STRING,
        "listLength": _NUMBER_STRING,
        "activationListLength": _NUMBER_STRING,
        "enableTLS": _BOOL_STRING,
        "unsafeSsl": _BOOL_STRING,
        "databaseIndex": _NUMBER_STRING,
        "addressFromEnv": _STRING,
        "hostFromEnv": _STRING,
        "portFromEnv": _STRING,
    },
    ("listName",),
)

TRIGGER_METADATA = {"metrics-api": METRICS_API_METADATA, "redis": REDIS_LIST_METADATA}

_TRIGGER = {
    **_object(
        {
            "type": {"enum": sorted(TRIGGER_METADATA)},
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
            "metadata": _STRING_MAP,
            "useCachedMetrics": {"type": "boolean"},
            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
            "authenticationRef": _object(
                {"name": _STRING, "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]}},
                ("name",),
            ),
        },
        ("type", "metadata"),
    ),
    "allOf": [
        {
            "if": {"properties": {"type": {"const": trigger_type}}},
            "then": {"properties": {"metadata": metadata}},
        }
        for trigger_type, metadata in TRIGGER_METADATA.items()
    ],
}

SCALED_OBJECT: Schema = _object(
    {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _METADATA,
        "spec": _object(
            {
                "scaleTargetRef": _object(
                    {"apiVersion": _STRING, "kind": _STRING, "name": _STRING, "envSourceContainerName": _STRING},
                    ("name",),
                ),
                "pollingInterval": _COUNT,
                "cooldownPeriod": _COUNT,
                "initialCooldownPeriod": _COUNT,
                "idleReplicaCount": _COUNT,
                "minReplicaCount": _COUNT,
                "maxReplicaCount": _COUNT,
                "fallback": _object(
                    {
                        "failureThreshold": _COUNT,
                        "replicas": _COUNT,
                        "behavior": {
                            "enum": [
                                "static",
                                "currentReplicas",
                                "currentReplicasIfHigher",
                                "currentReplicasIfLower",
                                "scalingModifiers",
                            ]
                        },
                    },
                    ("failureThreshold", "replicas"),
                ),
                "advanced": _object(
                    {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": _object({"name": _STRING, "behavior": {"type": "object"}}),
                        "scalingModifiers": _object(
                            {
                                "target": _NUMBER_STRING,
                                "activationTarget": _NUMBER_STRING,
                                "metricType": {"enum": ["AverageValue", "Value"]},
                                "formula": _STRING,
                            },
                            ("target", "formula"),
                        ),
                    }
                ),
                "triggers": {"type": "array", "minItems": 1, "items": _TRIGGER},
            },
            ("scaleTargetRef", "triggers"),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)

_PARAMETER_REF = {"parameter": _STRING, "name": _STRING}

TRIGGER_AUTHENTICATION: Schema = _object(
    {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": _METADATA,
        "spec": {
            **_object(
                {
                    "podIdentity": {"type": "object"},
                    "secretTargetRef": {
                        "type": "array",
                        "items": _object({**_PARAMETER_REF, "key": _STRING}, ("parameter", "name", "key")),
                    },
                    "env": {
                        "type": "array",
                        "items": _object({**_PARAMETER_REF, "containerName": _STRING}, ("parameter", "name")),
                    },
                    "hashiCorpVault": {"type": "object"},
                    "azureKeyVault": {"type": "object"},
                    "awsSecretManager": {"type": "object"},
                    "gcpSecretManager": {"type": "object"},
                    "boundServiceAccountToken": {"type": "array"},
                }
            ),
            "minProperties": 1,
        },
    },
    ("apiVersion", "kind", "metadata", "spec"),
)

SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
}
