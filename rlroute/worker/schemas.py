"""Request bodies of SGLang's and OpenAI's generation APIs, as pydantic models.

The worker and the router validate the same shapes with these models, so bad input gets a 422 naming the
field (FastAPI's validation error) and the router's OpenAPI spec documents every field. Unknown fields
are accepted and ignored, as SGLang does for sampling options it does not use. Limits keep one request
from asking for unbounded work.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_NEW_TOKENS = 32768  # SGLang rejects requests beyond the context length; Qwen3's is 32k natively
DEFAULT_MAX_NEW_TOKENS = 128  # SGLang's sampling_params default
MAX_PROMPT_CHARS = 2_000_000
MAX_INPUT_IDS = 262_144
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]  # vocabularies are far smaller; keeps hashing in int64


class SamplingParams(BaseModel):
    """``sampling_params`` of ``/generate``; only ``max_new_tokens`` changes the emulation."""

    model_config = ConfigDict(extra="allow")
    max_new_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, ge=0, le=MAX_NEW_TOKENS)
    temperature: float | None = Field(None, ge=0.0, le=100.0)


class GenerateRequest(BaseModel):
    """SGLang ``POST /generate`` body: exactly one of ``text`` / ``input_ids``."""

    model_config = ConfigDict(extra="allow")
    text: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    input_ids: list[TokenId] | None = Field(None, max_length=MAX_INPUT_IDS)
    sampling_params: SamplingParams = Field(default_factory=lambda: SamplingParams.model_validate({}))
    stream: bool = False
    rid: str | None = None

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerateRequest:
        if (self.text is None) == (self.input_ids is None):
            raise ValueError("give exactly one of 'text' (a string) or 'input_ids' (a list of token ids)")
        return self


class ChatMessage(BaseModel):
    """One OpenAI chat message (text content or a list of text parts)."""

    model_config = ConfigDict(extra="allow")
    role: str = Field(..., max_length=64)
    content: str | list[dict[str, Any]] = Field("", max_length=MAX_PROMPT_CHARS)


class ChatRequest(BaseModel):
    """OpenAI ``POST /v1/chat/completions`` body."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=4096)
    max_tokens: int | None = Field(None, ge=0, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=0, le=MAX_NEW_TOKENS)
    stream: bool = False

    def max_new(self) -> int:
        """Tokens to generate: ``max_completion_tokens``, else ``max_tokens``, else SGLang's default."""
        for v in (self.max_completion_tokens, self.max_tokens):
            if v is not None:
                return v
        return DEFAULT_MAX_NEW_TOKENS


PromptText = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]
PromptIds = Annotated[list[TokenId], Field(min_length=1, max_length=MAX_INPUT_IDS)]
MAX_BATCH = 256  # prompts in one OpenAI list prompt


class CompletionRequest(BaseModel):
    """OpenAI ``POST /v1/completions`` body: ``prompt`` is a string, a list of strings, a list of token ids or a
    list of token-id lists (OpenAI's four forms); a list holds one prompt per choice."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    prompt: PromptText | Annotated[list[PromptText], Field(min_length=1, max_length=MAX_BATCH)] | PromptIds | \
        Annotated[list[PromptIds], Field(min_length=1, max_length=MAX_BATCH)]
    max_tokens: int = Field(16, ge=0, le=MAX_NEW_TOKENS)  # OpenAI's default for completions
    stream: bool = False

    def prompts(self) -> list[tuple[str | None, list[int] | None]]:
        """Every prompt of the request as ``(text, None)`` or ``(None, token_ids)``, in choice order."""
        p = self.prompt
        if isinstance(p, str):
            return [(p, None)]
        if all(isinstance(x, int) for x in p):
            return [(None, [int(x) for x in p])]  # type: ignore[arg-type]
        return [(x, None) if isinstance(x, str) else (None, list(x)) for x in p]  # type: ignore[arg-type, union-attr]

    def first_prompt(self) -> tuple[str | None, list[int] | None]:
        """The first prompt (a batch is routed as one unit, by its first prompt)."""
        return self.prompts()[0]


class UpdateWeightsRequest(BaseModel):
    """SGLang ``POST /update_weights_from_disk`` body."""

    model_config = ConfigDict(extra="allow")
    model_path: str = Field(..., min_length=1, max_length=4096)
    load_format: str | None = None
    weight_version: str | None = None
    flush_cache: bool = True  # SGLang's UpdateWeightFromDiskReqInput: flush the prefix cache after loading
