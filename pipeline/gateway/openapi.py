"""The gateway's OpenAPI 3.1 document, served at ``/openapi.json``.

Written by hand (pure data) so that it says what platform teams need to know:
which headers each webhook route reads, every answer it can give and why, and
the canonical event schema of the generic API (taken from the pydantic model,
so it cannot drift). Tools such as schemathesis test the live service against it.
"""

from __future__ import annotations

import copy
from typing import Any

from pipeline.config import Settings
from pipeline.events import CanonicalEvent

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"

_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": _ERROR_REF}}}
    if headers:
        response["headers"] = headers
    return response


def _header(name: str, description: str, required: bool = False, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": {"type": "string", **schema},
    }


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}
}


def _common_responses(max_body: int, auth: str) -> dict[str, Any]:
    return {
        "400": _error("Malformed JSON or a body that fails validation; `field` names where, `reason` why."),
        "401": _error(auth),
        "413": _error(f"Body larger than {max_body} bytes (Content-Length or counted while reading)."),
        "415": _error("Content-Type is not one of the request body's media types."),
        "429": _error(
            "This sender sent more than PULSE_RATE_LIMIT_PER_S deliveries per second (after its burst); "
            "nothing was accepted. Retry after the given seconds.",
            _RETRY_AFTER,
        ),
        "503": _error(
            "Kafka did not acknowledge the delivery in time; nothing was accepted. Retry later.",
            _RETRY_AFTER,
        ),
    }


def _accepted() -> dict[str, Any]:
    return {
        "description": "Accepted: Kafka acknowledged the raw delivery and its canonical events "
        "(status `accepted`), or the delivery carries nothing the pipeline uses (status `ignored`, "
        "with the reason; nothing is stored).",
        "content": {
            JSON: {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Accepted"},
                        {"$ref": "#/components/schemas/Ignored"},
                    ]
                }
            }
        },
    }


def _webhook_body(description: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": description,
        "content": {
            JSON: {"schema": {"type": "object"}},
            "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
        },
    }


def _canonical_event_schema() -> dict[str, Any]:
    schema = copy.deepcopy(CanonicalEvent.model_json_schema(mode="validation"))
    # the $id would re-base $refs inside an OpenAPI document
    schema.pop("$id", None)
    schema.pop("$schema", None)
    return schema


def openapi_document(settings: Settings) -> dict[str, Any]:
    max_body = settings.max_body_bytes
    signature_401 = "Missing or invalid signature (or no secret configured for the platform)."
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Community Pulse gateway",
            "version": "1",
            "description": "The only door into Community Pulse. Platforms post their own webhook "
            "formats to /webhooks/*; in-house senders post canonical events to /v1/events. "
            "A 2xx means the delivery is stored durably in Kafka (or deliberately ignored); "
            "anything else was not accepted and may be retried.",
        },
        "paths": {
            "/webhooks/github": {
                "post": {
                    "operationId": "githubWebhook",
                    "summary": "GitHub webhook delivery (discussions, comments, issues, ping)",
                    "parameters": [
                        _header("X-GitHub-Event", "Event name, e.g. discussion_comment.", True),
                        _header("X-GitHub-Delivery", "Delivery GUID, shared by redeliveries."),
                        _header(
                            "X-Hub-Signature-256",
                            "sha256= + hex HMAC-SHA256(webhook secret, raw body).",
                            True,
                        ),
                    ],
                    "requestBody": _webhook_body("GitHub's own payload for the event."),
                    "responses": {"202": _accepted(), **_common_responses(max_body, signature_401)},
                }
            },
            "/webhooks/discourse": {
                "post": {
                    "operationId": "discourseWebhook",
                    "summary": "Discourse webhook delivery (post, topic, user, ping)",
                    "parameters": [
                        _header("X-Discourse-Instance", "Base URL of the forum: the space.", True),
                        _header("X-Discourse-Event", "Specific event, e.g. post_created.", True),
                        _header("X-Discourse-Event-Type", "Event group, e.g. post.", True),
                        _header("X-Discourse-Event-Id", "Webhook event row id (new on every retry)."),
                        _header(
                            "X-Discourse-Event-Signature",
                            "sha256= + hex HMAC-SHA256(instance secret, raw body).",
                            True,
                        ),
                    ],
                    "requestBody": _webhook_body("Discourse's payload: one top-level key, the event type."),
                    "responses": {"202": _accepted(), **_common_responses(max_body, signature_401)},
                }
            },
            "/webhooks/slack": {
                "post": {
                    "operationId": "slackEvent",
                    "summary": "Slack Events API request (event_callback, url_verification)",
                    "parameters": [
                        _header("X-Slack-Request-Timestamp", "Unix seconds; within 5 minutes of now.", True),
                        _header(
                            "X-Slack-Signature",
                            "v0= + hex HMAC-SHA256(signing secret, 'v0:' + timestamp + ':' + body).",
                            True,
                        ),
                        _header("X-Slack-Retry-Num", "Present on Slack's retries."),
                    ],
                    "requestBody": _webhook_body("Slack's outer envelope."),
                    "responses": {
                        "200": {
                            "description": "url_verification: the challenge, echoed after the signature check.",
                            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Challenge"}}},
                        },
                        "202": _accepted(),
                        **_common_responses(max_body, signature_401),
                    },
                }
            },
            "/v1/events": {
                "post": {
                    "operationId": "postEvents",
                    "summary": "Canonical events from an in-house sender",
                    "description": "A JSON array of canonical events (or one event), or NDJSON (one "
                    "event per line). Authenticated by the sender's bearer token. `platform` defaults "
                    "to the sender's name; `received_at` is set by the gateway.",
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            JSON: {
                                "schema": {
                                    "oneOf": [
                                        {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/CanonicalEvent"},
                                        },
                                        {"$ref": "#/components/schemas/CanonicalEvent"},
                                    ]
                                }
                            },
                            "application/x-ndjson": {
                                "schema": {
                                    "type": "string",
                                    "description": "One CanonicalEvent JSON object per line.",
                                }
                            },
                        },
                    },
                    "responses": {
                        "202": _accepted(),
                        **_common_responses(max_body, "Missing or unknown bearer token."),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness: the process answers",
                    "responses": {
                        "200": {
                            "description": "Alive.",
                            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Status"}}},
                        }
                    },
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: Kafka answers",
                    "responses": {
                        "200": {
                            "description": "Kafka answered a metadata request.",
                            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Status"}}},
                        },
                        "503": _error("Kafka is not answering; deliveries would get 503.", _RETRY_AFTER),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (text exposition format)",
                    "responses": {
                        "200": {
                            "description": "Metrics.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {"description": "OpenAPI 3.1.", "content": {JSON: {"schema": {"type": "object"}}}}
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "CanonicalEvent": _canonical_event_schema(),
                "Error": {
                    "type": "object",
                    "required": ["error", "field", "reason"],
                    "properties": {
                        "error": {"type": "string", "description": "What went wrong."},
                        "field": {
                            "type": ["string", "null"],
                            "description": "Where: a dotted body path, header.NAME, or null.",
                        },
                        "reason": {"type": "string", "description": "Why, in words a sender can act on."},
                    },
                },
                "Accepted": {
                    "type": "object",
                    "required": ["status", "events"],
                    "properties": {
                        "status": {"const": "accepted"},
                        "events": {"type": "integer", "minimum": 1},
                        "delivery_id": {"type": ["string", "null"]},
                    },
                },
                "Ignored": {
                    "type": "object",
                    "required": ["status", "reason"],
                    "properties": {"status": {"const": "ignored"}, "reason": {"type": "string"}},
                },
                "Challenge": {
                    "type": "object",
                    "required": ["challenge"],
                    "properties": {"challenge": {"type": "string"}},
                },
                "Status": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"type": "string"}},
                },
            },
        },
    }
