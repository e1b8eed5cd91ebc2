"""From a validated request body to what the scheduler decodes (:class:`Plan`), with every check that needs the
model or tokenizer (model name, decoding options, chat template, prompt length) done here, before any model work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from jinja2 import TemplateError

from selfdistill.decode.engine import check_request
from selfdistill.decode.registry import Strategy, make_strategy, refuse_baseline
from selfdistill.serve.schemas import APIError, ChatRequest, CompletionRequest

#: OpenAI's default ``max_tokens`` of ``/v1/completions``.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


@dataclass
class Plan:
    """Prompts (token ids, one per choice), the token budget, stop strings and the decoding setting."""

    prompts: list[list[int]]
    max_new_tokens: int
    stops: list[str]
    strategy: Strategy
    stream: bool
    include_usage: bool

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


@dataclass
class ServeContext:
    """What planning needs: the served name, the tokenizer (a copy used only by the event-loop thread), the
    server's setting, the position table, an optional chat template and the chat default budget."""

    model_name: str
    tokenizer: object
    strategy: Strategy
    max_positions: int | None
    check_setting: object  # Scheduler.check_setting
    chat_template: str | None = None
    default_max_tokens: int = 256
    vocab_size: int = field(default=0)
    #: ``(name, options) -> Strategy``: the setting as the served model decodes it, built once
    #: (:func:`selfdistill.decode.engine.strategy_for`: its trained ``k_max`` for an unset one, its calibration)
    resolve: Callable[..., Strategy] = make_strategy

    def strategy_of(self, options: dict | None) -> Strategy:
        """The request's setting: the server's, or ``selfdistill`` options (without ``strategy``: the server's
        strategy with these options changed), validated by the registry and against the model, built once here
        and trusted from here on (the scheduler keys its engines by it)."""
        if not options:
            return self.strategy
        options = dict(options)
        name = options.pop("strategy", None)
        if name is None:
            name, options = self.strategy.name, self.strategy.values() | options
        if not isinstance(name, str):
            raise APIError(400, f"selfdistill.strategy must be a string, got {name!r}", param="selfdistill.strategy")
        try:
            unit = self.resolve(name, **options)
            refuse_baseline(unit, by="the server", instead="plain greedy decoding is strategy 'static' with k=1 "
                                                          "(or the lossless 'verify')")
            self.check_setting(unit)
        except (ValueError, TypeError) as err:
            raise APIError(400, f"selfdistill: {err}", param="selfdistill", code="invalid_decoding_options") from None
        return unit


def plan_completion(req: CompletionRequest, ctx: ServeContext) -> Plan:
    prompt = req.prompt
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "prompt is empty", param="prompt", code="invalid_prompt")
    ids = [list(p) if isinstance(p, list) else ctx.tokenizer(p).input_ids for p in prompt]  # ids: _plan checks
    budget = req.max_tokens or COMPLETIONS_DEFAULT_MAX_TOKENS
    return _plan(req, ctx, ids, budget, param="prompt")


def plan_chat(req: ChatRequest, ctx: ServeContext) -> Plan:
    template = ctx.chat_template or getattr(ctx.tokenizer, "chat_template", None)
    if not template:
        raise APIError(400, f"model {ctx.model_name!r} has no chat template; use /v1/completions or start the "
                       "server with --chat-template", param="messages", code="no_chat_template")
    try:
        text = ctx.tokenizer.apply_chat_template([m.as_template_message() for m in req.messages],
                                                 chat_template=template, tokenize=False, add_generation_prompt=True)
    except TemplateError as err:
        raise APIError(400, f"the chat template refused these messages: {err}", param="messages") from None
    ids = ctx.tokenizer(text, add_special_tokens=False).input_ids  # the template already has its specials
    budget = req.max_completion_tokens or req.max_tokens
    if budget is None:
        room = ctx.max_positions - len(ids) if ctx.max_positions is not None else ctx.default_max_tokens
        if room < 1:  # the user set no budget: say what is too long, not a max_new_tokens they never gave
            raise APIError(400, f"the messages are {len(ids)} tokens with the chat template, which fills this "
                           f"model's context of {ctx.max_positions} tokens; shorten them", param="messages",
                           code="context_length_exceeded")
        budget = min(ctx.default_max_tokens, room)
    return _plan(req, ctx, [ids], budget, param="messages")


def _plan(req, ctx: ServeContext, ids: list[list[int]], budget: int, *, param: str) -> Plan:
    if req.model != ctx.model_name:
        raise APIError(404, f"the model {req.model!r} does not exist; this server serves {ctx.model_name!r}",
                       param="model", code="model_not_found")
    for p in ids:
        try:
            check_request(p, max_new_tokens=budget, max_positions=ctx.max_positions, vocab_size=ctx.vocab_size)
        except ValueError as err:
            too_long = ctx.max_positions is not None and len(p) + budget > ctx.max_positions
            raise APIError(400, str(err), param=param,
                           code="context_length_exceeded" if too_long else "invalid_prompt") from None
    strategy = ctx.strategy_of(req.selfdistill)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return Plan(ids, budget, req.stops(), strategy, req.stream, include_usage)
