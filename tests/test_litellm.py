"""LiteLLM configs as llmpool rows (`llmpool.repository.litellm`, ``apply --from-litellm``): the
mapping on the example configs of LiteLLM's documentation, the refusal of literal keys, the
unmapped listing, and the import on SQLite and PostgreSQL, served by real clients."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from cli_runner import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import AnthropicServer, OpenAIServer, Reply, Status

from llmpool.errors import InvalidConfigError, LiteralSecretError
from llmpool.repository.documents import load_object
from llmpool.repository.litellm import Translation, from_litellm

DATA = Path(__file__).parent / "data" / "litellm"

#: What the commands need to allow the variables LiteLLM's Azure examples reference.
AZURE_ALLOWED = {
    "LLMPOOL_ALLOWED_ENV": "AZURE_API_KEY AZURE_API_BASE:plain AZURE_API_VERSION:plain"
}


def translate(name: str, **replace: str) -> Translation:
    """Translate the example config ``name``, with text replaced as ``replace`` says."""
    text = (DATA / name).read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    return from_litellm(load_object(text, "yaml"))


def rows(translation: Translation, *fields: str) -> list[tuple[Any, ...]]:
    """Each row of the translation as a tuple of ``fields`` (``None`` when left out)."""
    return [tuple(row.get(f) for f in fields) for row in translation.document["llms"]]


def deployment(model: str, group: str = "g", **params: Any) -> dict[str, Any]:
    """One model_list entry."""
    return {"model_name": group, "litellm_params": {"model": model, **params}}


def test_the_quick_start_as_documented_is_refused_for_its_literal_key() -> None:
    """The docs' Quick Start holds ``api_key: none``: refused, naming the entry and field."""
    with pytest.raises(LiteralSecretError) as caught:
        translate("quick_start.yaml")
    assert "1 credential(s)" in str(caught.value)
    assert "model_list[4] ('vllm-models') litellm_params.api_key" in str(caught.value)
    assert caught.value.field == "litellm_params.api_key"


def test_the_quick_start_maps_groups_to_scopes_and_lists_the_rest() -> None:
    """Each deployment is a row of its group's scope; a wildcard and the settings are listed
    by path, never by value (the master key is not printed)."""
    done = translate("quick_start.yaml", **{"api_key: none": "api_key: os.environ/VLLM_KEY"})
    fields = ("scope", "name", "provider", "model_name", "priority", "rpm", "weight")
    assert rows(done, *fields) == [
        ("gpt-4o", "azure/gpt-4o-eu", "azure_openai", "gpt-4o-eu", 100, 6, 1),
        ("bedrock-claude-v1", "bedrock/anthropic.claude-instant-v1", "bedrock",
         "anthropic.claude-instant-v1", 100, None, None),
        ("gpt-4o", "azure/gpt-4o-ca", "azure_openai", "gpt-4o-ca", 100, 6, 1),
        ("anthropic-claude", "bedrock/anthropic.claude-instant-v1", "bedrock",
         "anthropic.claude-instant-v1", 100, None, None),
        ("vllm-models", "openai/facebook/opt-125m", "openai", "facebook/opt-125m", 100, 1440, 1),
    ]  # fmt: skip
    eu, _, _, claude, vllm = done.document["llms"]
    assert eu["auth_meta"] == {
        "api_key_env": "AZURE_API_KEY_EU",
        "api_version_env": "AZURE_API_VERSION",
    }
    assert eu["config"] == {
        "azure_endpoint": "https://my-endpoint-europe-berri-992.openai.azure.com/"
    }
    assert claude["config"] == {"region_name": "us-east-1"}
    assert (vllm["auth_meta"], vllm["config"]) == (
        {"api_key_env": "VLLM_KEY"},
        {"base_url": "http://0.0.0.0:4000/v1"},
    )
    assert done.document["scopes"]["gpt-4o"] == {"routing": "weighted"}
    assert [item.path for item in done.unmapped] == [
        "model_list[4] ('vllm-models') model_info.version",
        "model_list[5] ('*')",
        "litellm_settings.drop_params",
        "litellm_settings.success_callback",
        "general_settings.master_key",
        "general_settings.alerting",
    ]
    assert "wildcard" in done.unmapped[1].reason
    assert done.render().startswith("not mapped (6):\n  model_list[4]")
    assert "sk-1234" not in done.render()


def test_order_becomes_priority() -> None:
    """routing.md's deployment ordering: ``order`` 1 and 2 are priorities 1 and 2."""
    done = translate("ordering.yaml")
    assert rows(done, "name", "priority") == [
        ("azure/gpt-4-primary", 1),
        ("azure/gpt-4-fallback", 2),
    ]
    assert done.unmapped == ()  # enable_pre_call_checks: what llmpool always does


def test_weight_and_environment_references_map_to_the_row() -> None:
    """routing.md's weighted deployments: ``weight`` as is; every ``os.environ/NAME`` a
    reference under the client's parameter name."""
    done = translate("weighted.yaml")
    assert rows(done, "name", "weight") == [
        ("azure/chatgpt-v-2", 9),
        ("azure/chatgpt-functioncalling", 1),
    ]
    assert done.document["llms"][0]["auth_meta"] == {
        "api_key_env": "AZURE_API_KEY",
        "api_version_env": "AZURE_API_VERSION",
        "azure_endpoint_env": "AZURE_API_BASE",
    }
    assert "config" not in done.document["llms"][0]


def test_simple_shuffle_weighs_by_rpm_as_litellm_draws() -> None:
    """Without weights, simple-shuffle draws by rpm: rows weigh rpm over the common divisor;
    another strategy sets no weight."""
    entries = [deployment("openai/a", rpm=6), deployment("openai/b", rpm=6)]
    entries.append(deployment("openai/c", rpm=1440))
    assert rows(from_litellm({"model_list": entries}), "weight") == [(1,), (1,), (240,)]
    latency = {"model_list": entries, "router_settings": {"routing_strategy": "least-busy"}}
    assert rows(from_litellm(latency), "weight", "rpm") == [(None, 6), (None, 6), (None, 1440)]


@pytest.mark.parametrize(
    ("strategy", "routing"),
    [
        ("simple-shuffle", "weighted"),
        ("latency-based-routing", "latency"),
        ("least-busy", "least_busy"),
    ],
)
def test_routing_strategies_map_to_the_scopes_routing(strategy: str, routing: str) -> None:
    """Each strategy llmpool has routes every imported scope."""
    config = {"model_list": [deployment("gpt-4o", "a"), deployment("gpt-4o-mini", "b")]}
    config["router_settings"] = {"routing_strategy": strategy}
    assert from_litellm(config).document["scopes"] == {
        "a": {"routing": routing},
        "b": {"routing": routing},
    }


def test_a_strategy_llmpool_lacks_is_listed_and_sets_no_routing() -> None:
    """usage-based-routing has no llmpool strategy: listed, and the scopes keep theirs."""
    config = {"model_list": [deployment("gpt-4o")]}
    config["router_settings"] = {"routing_strategy": "usage-based-routing-v2", "redis_host": "h"}
    done = from_litellm(config)
    assert "scopes" not in done.document
    assert [item.describe() for item in done.unmapped] == [
        "router_settings.routing_strategy: 'usage-based-routing-v2' has no llmpool strategy; "
        "the scopes keep theirs",
        "router_settings.redis_host: replicas share breakers and limits through llmpool's "
        "Redis option (see Running a fleet)",
    ]


def test_fallbacks_add_the_fallback_groups_rows_at_lower_priority() -> None:
    """reliability.md's fallbacks: the group's rows come after the scope's own, in a scope of
    their own too; retry settings are listed."""
    done = translate("fallbacks.yaml")
    assert rows(done, "scope", "name", "provider", "priority") == [
        ("gpt-4", "my-specific-model-id", "openai", 100),
        ("gpt-4", "azure/chatgpt-v-2", "azure_openai", 100),
        ("anthropic-claude", "anthropic/claude-3-opus-20240229", "anthropic", 100),
        ("gpt-4", "fallback anthropic-claude: anthropic/claude-3-opus-20240229", "anthropic", 1100),
    ]
    assert done.document["llms"][3]["auth_meta"] == {"api_key_env": "ANTHROPIC_API_KEY"}
    assert [item.path for item in done.unmapped] == [
        "litellm_settings.num_retries",
        "litellm_settings.request_timeout",
        "litellm_settings.allowed_fails",
        "litellm_settings.cooldown_time",
    ]


def test_fallbacks_to_a_model_id_defaults_and_unknown_names() -> None:
    """A fallback naming a ``model_info.id`` copies that row; ``default_fallbacks`` serve the
    groups naming none; fallbacks each level lower; unknown names are listed."""
    entries = [deployment("openai/a", "a", order=2), deployment("openai/b", "b")]
    entries.append({**deployment("anthropic/claude-3-haiku", "c"), "model_info": {"id": "haiku"}})
    config = {
        "model_list": entries,
        "router_settings": {"fallbacks": [{"a": ["haiku", "b", "nowhere"]}, {"ghost": ["a"]}]},
        "litellm_settings": {"default_fallbacks": ["a"]},
    }
    done = from_litellm(config)
    fallbacks = [row for row in done.document["llms"] if row["name"].startswith("fallback")]
    assert [(r["scope"], r["name"], r["priority"]) for r in fallbacks] == [
        ("a", "fallback haiku", 1100),
        ("a", "fallback b: openai/b", 2100),
        ("b", "fallback a: openai/a", 1002),
        ("c", "fallback a: openai/a", 1002),
    ]
    assert [item.describe() for item in done.unmapped] == [
        "fallbacks of 'ghost': no model_list entry serves it",
        "fallbacks of 'a': 'nowhere' is no model_name nor model_info.id of model_list",
    ]


@pytest.mark.parametrize(
    ("model", "params", "expected"),
    [
        ("gpt-4o", {}, {"provider": "openai", "model_name": "gpt-4o"}),
        ("o3-mini", {}, {"provider": "openai", "model_name": "o3-mini"}),
        ("claude-3-5-sonnet-latest", {}, {"provider": "anthropic"}),
        ("text-embedding-3-small", {}, {"provider": "openai", "kind": "embedding"}),
        ("bedrock/converse/anthropic.claude-3", {}, {"model_name": "anthropic.claude-3"}),
        (
            "vertex_ai/gemini-1.5-pro",
            {"vertex_project": "p", "vertex_location": "us-central1"},
            {"provider": "vertexai", "config": {"project": "p", "location": "us-central1"}},
        ),
        ("ollama_chat/llama3", {"api_base": "http://localhost:11434"}, {"provider": "ollama"}),
        (
            "groq/llama3-8b-8192",
            {},
            {
                "provider": "openai",
                "model_name": "llama3-8b-8192",
                "auth_meta": {"api_key_env": "GROQ_API_KEY"},
                "config": {"base_url": "https://api.groq.com/openai/v1"},
            },
        ),
        (
            "mistral/mistral-large-latest",
            {"api_key": "os.environ/MY_MISTRAL", "temperature": 0.2},
            {
                "auth_meta": {"api_key_env": "MY_MISTRAL"},
                "config": {"base_url": "https://api.mistral.ai/v1", "temperature": 0.2},
            },
        ),
    ],
)
def test_provider_prefixes_map_to_llmpool_providers(
    model: str, params: dict[str, Any], expected: dict[str, Any]
) -> None:
    """A LiteLLM model string gives the provider, the model name and, for OpenAI-compatible
    services, their endpoint and the key variable LiteLLM reads for them."""
    row = from_litellm({"model_list": [deployment(model, **params)]}).document["llms"][0]
    assert {key: row.get(key) for key in expected} == expected


def test_prices_and_budgets_map_to_what_llmpool_reads() -> None:
    """LiteLLM's per-token prices are llmpool's; a budget over a day or a month is
    ``max_spend``; one over another duration is listed."""
    prices = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
    daily = deployment("gpt-4o", "a", max_budget=5, budget_duration="1d", **prices)
    weekly = deployment("gpt-4o", "b", max_budget=20, budget_duration="7d")
    done = from_litellm({"model_list": [daily, weekly]})
    assert [row.get("config") for row in done.document["llms"]] == [
        {**prices, "max_spend": {"amount": 5, "period": "day"}},
        None,
    ]
    assert [item.path for item in done.unmapped] == [
        "model_list[1] ('b') litellm_params.max_budget",
        "model_list[1] ('b') litellm_params.budget_duration",
    ]


def test_model_info_sizes_and_missing_capabilities_become_the_rows_fit() -> None:
    """``max_input_tokens``/``max_output_tokens`` and a capability flagged false become
    ``config.model_info`` (the row is skipped for calls it cannot take); an unflagged
    capability is not refused; other model_info keys are listed."""
    info = {"max_input_tokens": 128000, "max_output_tokens": 16384, "supports_vision": False,
            "supports_function_calling": True, "litellm_provider": "openai"}  # fmt: skip
    entry = {**deployment("gpt-4o", "a"), "model_info": info}
    done = from_litellm({"model_list": [entry, deployment("gpt-4o", "b")]})
    assert done.document["llms"][0]["config"]["model_info"] == {
        "context_window": 128000,
        "max_output_tokens": 16384,
        "capabilities": ["streaming", "structured_output", "tools"],
    }
    assert "config" not in done.document["llms"][1]
    assert [item.path for item in done.unmapped] == [
        "model_list[0] ('a') model_info.litellm_provider"
    ]


def test_a_provider_llmpool_lacks_is_listed_not_imported() -> None:
    """A deployment of a provider llmpool has none for is listed, its group left out."""
    config = {"model_list": [deployment("huggingface/HuggingFaceH4/zephyr-7b-beta", "zephyr")]}
    done = from_litellm(config)
    assert done.document == {"llms": []}
    assert done.unmapped[0].path == "model_list[0] ('zephyr')"
    assert "no llmpool provider for model 'huggingface/" in done.unmapped[0].reason


def test_row_names_are_unique_within_a_scope() -> None:
    """Deployments of one model in one group are ``model``, ``model #2``...; an id names one;
    a fallback copy carries its source's name."""
    entries = [deployment("gpt-4o", "g", api_key=f"os.environ/KEY_{n}") for n in range(3)]
    entries.append({**deployment("gpt-4o"), "model_info": {"id": "gpt-4o"}})
    entries.append(deployment("gpt-4o", "h"))
    config = {"model_list": entries, "router_settings": {"fallbacks": [{"h": ["g"]}]}}
    assert rows(from_litellm(config), "scope", "name") == [
        ("g", "gpt-4o"),
        ("g", "gpt-4o #2"),
        ("g", "gpt-4o #3"),
        ("g", "gpt-4o #4"),
        ("h", "gpt-4o"),
        ("h", "fallback g: gpt-4o"),
        ("h", "fallback g: gpt-4o #2"),
        ("h", "fallback g: gpt-4o #3"),
        ("h", "fallback g: gpt-4o #4"),
    ]


def test_router_arguments_as_json_read_like_a_yaml_config() -> None:
    """A Router's arguments dumped as JSON are read as the YAML config is; a file that is no
    object, or repeats a key, is refused naming the key."""
    config = {"model_list": [deployment("gpt-4o", "g", order=1)]}
    assert from_litellm(load_object(json.dumps(config))).document["llms"][0]["priority"] == 1
    with pytest.raises(InvalidConfigError, match="does not hold an object"):
        load_object("- model_name: g", "yaml")
    with pytest.raises(InvalidConfigError, match="'order' is given twice"):
        load_object("model_list:\n  - litellm_params: {order: 1, order: 2}", "yaml")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_list": {"gpt-4": {}}}, "model_list must be a list"),
        ({"model_list": [{"litellm_params": {"model": "m"}}]}, r"\[0\] has no model_name"),
        ({"model_list": [{"model_name": "a"}]}, r"\[0\] \('a'\) has no litellm_params.model"),
        ({"model_list": [deployment("gpt-4", order="first")]}, "order must be an integer"),
        ({"model_list": [], "router_settings": {"fallbacks": ["gpt-4"]}}, "must be a list like"),
        ({"model_list": [], "litellm_settings": "verbose"}, "litellm_settings must be an object"),
    ],
)  # fmt: skip
def test_a_malformed_config_is_refused_naming_what_is_wrong(config: Any, message: str) -> None:
    """A config LiteLLM could not read either raises InvalidConfigError naming the place."""
    with pytest.raises(InvalidConfigError, match=message):
        from_litellm(config)


#: Any YAML value: scalars, lists and objects, a few levels deep.
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=4,
)
MODELS = st.sampled_from(["openai/gpt-4o", "azure/d", "gpt-4o", "groq/l", "h/m", "o*"])
PARAMS = st.fixed_dictionaries(
    {"model": MODELS},
    optional={
        "api_key": st.sampled_from(["os.environ/K", ""]),
        "order": st.integers(-5, 2000),
        **dict.fromkeys(("rpm", "weight"), st.integers(0, 60)),
        **dict.fromkeys(("api_base", "stop", "x"), VALUES | st.just("os.environ/B")),
    },
)
ENTRIES = st.fixed_dictionaries(
    {"model_name": st.sampled_from(["a", "b"]) | st.just("*") | VALUES, "litellm_params": PARAMS},
    optional={"model_info": st.fixed_dictionaries({}, optional={"id": VALUES, "mode": VALUES})},
)
SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        "routing_strategy": st.sampled_from(["least-busy", "a"]) | VALUES,
        "fallbacks": st.just([{"a": ["b", "c"]}, {"b": "a"}]) | VALUES,
        "default_fallbacks": st.just(["a"]) | VALUES,
        "num_retries": VALUES,
    },
)


# Nested draws are slow on a busy machine; the translation, not the draw, is under test.
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {"model_list": st.lists(ENTRIES, max_size=3)},
        optional={"router_settings": SETTINGS | VALUES, "litellm_settings": SETTINGS | VALUES},
    )
)
def test_any_config_maps_or_is_refused_with_a_typed_error(config: dict[str, Any]) -> None:
    """Whatever a config holds, the translation gives rows unique by (scope, name) in groups
    it names, or refuses with InvalidConfigError; no other exception escapes."""
    try:
        done = from_litellm(config)
    except InvalidConfigError:
        return
    keys = [(row["scope"], row["name"]) for row in done.document["llms"]]
    assert len(set(keys)) == len(keys)
    assert set(done.document.get("scopes", {})) <= {scope for scope, _ in keys}


@given(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=8, max_size=40),
    st.sampled_from(["api_key", "azure_ad_token", "aws_secret_access_key"]),
    st.integers(0, 2),
)
def test_a_literal_credential_is_refused_without_its_value(
    secret: str, key: str, index: int
) -> None:
    """A literal credential in any entry refuses the file, naming the entry, not the value."""
    entries = [deployment("gpt-4o", f"group-{n}") for n in range(3)]
    entries[index]["litellm_params"][key] = "sk-" + secret
    with pytest.raises(LiteralSecretError) as caught:
        from_litellm({"model_list": entries})
    assert f"model_list[{index}] ('group-{index}') litellm_params.{key}" in str(caught.value)
    # the value, not the secret alone: a short one ("credenti") may be a word of the message
    assert "sk-" + secret not in str(caught.value)


def test_literal_keys_are_refused_by_the_command_and_never_shown(
    migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """configs.md's literal token and keys: the import is refused, naming each entry; no value
    reaches stdout, stderr or a log record, and nothing is written."""
    caplog.set_level(logging.DEBUG)
    db = ("--database-url", migrated_url)
    path = str(DATA / "literal_keys.yaml")
    for json_flag in ((), ("--json",)):
        done = run_cli("apply", "--from-litellm", path, *json_flag, *db)
        assert done.code == 1
        assert "3 credential(s) in model_list are literal values" in done.err
        assert "model_list[2] ('openai-gpt-4o') litellm_params.api_key" in done.err
        seen = done.out + done.err + caplog.text
        assert "sk-123" not in seen and "eyJ0eXAiOiJ" not in seen
    assert json.loads(run_cli("list", "--json", *db).out) == []


def test_the_command_plans_lists_applies_and_reapplies_nothing(
    migrated_url: str, tmp_path: Path
) -> None:
    """apply --from-litellm --dry-run prints the plan and what is not mapped; the variables
    LiteLLM's examples use must be allowed first; then it applies, and again changes nothing."""
    db = ("--database-url", migrated_url)
    path = str(DATA / "fallbacks.yaml")
    refused = run_cli("apply", "--from-litellm", path, "--dry-run", *db)
    assert refused.code == 1
    assert "model_list[1] ('gpt-4'): LLM 'azure/chatgpt-v-2': auth_meta.api_key_env" in refused.err
    assert "AZURE_API_KEY, which is not on the allowlist" in refused.err
    assert "LLMPOOL_ALLOWED_ENV" in refused.err

    dry = run_cli("apply", "--from-litellm", path, "--dry-run", *db, env=AZURE_ALLOWED)
    assert dry.code == 0, dry.err
    lines = dry.out.splitlines()
    assert lines[:4] == [
        "+ add LLM 'my-specific-model-id' in scope 'gpt-4'",
        "+ add LLM 'azure/chatgpt-v-2' in scope 'gpt-4'",
        "+ add LLM 'anthropic/claude-3-opus-20240229' in scope 'anthropic-claude'",
        "+ add LLM 'fallback anthropic-claude: anthropic/claude-3-opus-20240229' in scope 'gpt-4'",
    ]
    assert "~ route scope 'gpt-4': priority -> weighted" in lines
    assert "not mapped (4):" in lines and "  litellm_settings.num_retries: llmpool's" in dry.out
    assert lines[-1] == "dry run: nothing was changed"
    assert json.loads(run_cli("list", "--json", *db).out) == []

    done = json.loads(
        run_cli("apply", "--from-litellm", path, "--json", *db, env=AZURE_ALLOWED).out
    )
    assert done["applied"] is True
    assert done["unmapped"][0]["path"] == "litellm_settings.num_retries"
    listed = json.loads(run_cli("list", "--all-scopes", "--json", *db).out)
    assert sorted((r["scope"], r["priority"], r["name"]) for r in listed) == [
        ("anthropic-claude", 100, "anthropic/claude-3-opus-20240229"),
        ("gpt-4", 100, "azure/chatgpt-v-2"),
        ("gpt-4", 100, "my-specific-model-id"),
        ("gpt-4", 1100, "fallback anthropic-claude: anthropic/claude-3-opus-20240229"),
    ]
    assert run_cli("routing", "gpt-4", *db).out.strip() == "scope 'gpt-4' routes by weighted"
    again = run_cli("apply", "--from-litellm", path, *db, env=AZURE_ALLOWED)
    assert again.out.splitlines()[0] == "no changes"


def test_an_imported_config_serves_its_fallback_through_real_clients(
    migrated_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Azure deployment with an Anthropic fallback group, imported, answers as LiteLLM
    would: Azure refuses the key, the fallback answers; each client got its own key."""
    with OpenAIServer() as azure, AnthropicServer() as claude:
        azure.script(Status(401))
        claude.script(Reply("from claude"))
        config = tmp_path / "config.yaml"
        config.write_text(
            f"""
model_list:
  - model_name: chat
    litellm_params:
      model: azure/gpt-4o-eu
      api_base: {azure.url}
      api_version: "2024-02-01"
      api_key: os.environ/AZURE_API_KEY_EU
  - model_name: claude
    litellm_params:
      model: anthropic/claude-3-5-haiku-latest
      api_base: {claude.url}
      api_key: os.environ/ANTHROPIC_API_KEY
router_settings:
  fallbacks: [{{"chat": ["claude"]}}]
"""
        )
        env = {
            "LLMPOOL_ALLOWED_ENV": "AZURE_API_KEY_EU",
            "LLMPOOL_ALLOWED_ENDPOINTS": f"{azure.url} {claude.url}",
        }
        done = run_cli(
            "apply", "--from-litellm", str(config), "--database-url", migrated_url, env=env
        )
        assert done.code == 0, done.err
        assert "not mapped" not in done.out

        from llmpool.pool.facade import LLMPool

        for name, value in {**env, "AZURE_API_KEY_EU": "az-eu", "ANTHROPIC_API_KEY": "an"}.items():
            monkeypatch.setenv(name, value)
        with LLMPool(migrated_url, poll_interval=0, listen=False) as pool:
            answer = pool.get_llm_with_fallback(scope="chat").invoke("hi")
        assert answer.content == "from claude"
        (asked,) = azure.wait_for_requests(1)
        assert asked.path == "/openai/deployments/gpt-4o-eu/chat/completions?api-version=2024-02-01"
        (answered,) = claude.wait_for_requests(1)
        keys = [{k.lower(): v for k, v in r.headers.items()} for r in (asked, answered)]
        claude_key = keys[1].get("x-api-key") or keys[1]["authorization"].removeprefix("Bearer ")
        assert (keys[0]["api-key"], claude_key) == ("az-eu", "an")
