"""A served teacher for reward mode: the teacher's token log-probs from a vLLM-compatible server.

Reward mode needs only log P_T(token | everything before it) for each teacher response token (GOLD.md
section 5), a prefill. Each teacher view (teacher prompt ids + teacher response ids) is sent as token
ids to the server's `/v1/completions` with max_tokens=1 and prompt_logprobs=0; the answer's
`choices[0].prompt_logprobs` holds one entry per sent token (null at position 0), each a dict keyed by
token id (a string in JSON) of {logprob, rank, decoded_token}. The log-probs of the response tokens
become span log-probs through losses.span_logprobs, as on the ref-worker path. Every answer is checked
(count, the sent token's key, finite values); a bad answer is an error naming the gold.* setting,
never a reward. Requests go out in rounds (ScoringRound), one per training batch, on an event loop
of their own: a trainer sends each view as soon as it is known and collects the batch when its
reward step needs it. No SkyRL import: the trainers of every SkyRL version call this.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import aiohttp
import torch

from .config import validate_teacher_backend
from .losses import group_sizes, span_logprobs

# Delay before the first retry; each further retry doubles it.
FIRST_BACKOFF_SECONDS = 0.5
# Short text scored at start-up to compare the server's tokenizer with the teacher tokenizer.
CHECK_TEXT = "The served teacher scores 12 apples, 7 pears and naïve café prose: 東京 ✓."
# HTTP statuses worth a retry: overload and gateway errors, rate limiting.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class ServedTeacherError(RuntimeError):
    """The teacher server could not be reached, or answered something that cannot be a reward."""


@dataclass
class _Answer:
    status: int
    text: str


class ServedTeacher:
    """Client of a vLLM-compatible server that scores teacher views.

    url: the server's root (http://host:8000); model_name: the served model (None = the only one the
    server lists, resolved by `check`); tokenizer: the teacher tokenizer (trainer.ref.model.path),
    used to verify the server's. Metrics of the last scored batch are in `metrics` (gold/...).
    """

    def __init__(
        self,
        url: str,
        tokenizer,
        model_name: str | None = None,
        concurrency: int = 64,
        timeout: float = 300.0,
        retries: int = 3,
        backoff: float = FIRST_BACKOFF_SECONDS,
        max_teacher_length: int | None = None,
    ):
        self.url = url.rstrip("/")
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_teacher_length = max_teacher_length
        self.metrics: dict[str, float] = {}
        self._retried = 0

    @classmethod
    def from_config(cls, gold, teacher_tokenizer, check: bool = True) -> "ServedTeacher":
        """The client the gold section describes (gold.teacher_backend=served), checked against the
        server at once unless check=False."""
        validate_teacher_backend(gold)
        teacher = cls(
            gold.teacher_url, teacher_tokenizer, gold.teacher_model_name, gold.teacher_concurrency,
            gold.teacher_timeout, gold.teacher_retries, max_teacher_length=gold.max_teacher_length,
        )
        if check:
            teacher.check()
        return teacher

    # ------------------------------------------------------------------ public API
    def check(self) -> None:
        """Start-up check: the server answers, serves the model, accepts the teacher's context
        length, and its tokenizer spells the teacher tokenizer's ids as the teacher tokenizer does.
        Raises ServedTeacherError naming the setting to fix."""
        _run(self._check())

    def token_logprobs(self, views: Sequence) -> list[torch.Tensor]:
        """log P_T of each teacher response token: views with .prompt_ids and .response_ids ->
        one float32 [len(response_ids)] tensor per view (empty responses are not sent). All
        requests in flight together, at most `concurrency` at a time."""
        scoring = self.begin()
        for i, view in enumerate(views):
            scoring.send(i, view)
        return scoring.token_logprobs(len(views))

    def span_logprobs_for(self, views: Sequence, teacher_group_ids: torch.Tensor, num_groups: int) -> dict[str, torch.Tensor]:
        """The reward-mode teacher payload the GOLD ref worker returns, from the server.

        views: B teacher views; teacher_group_ids: [B, R_t] (-1 padding), as collate_views lays
        them out. Returns {"teacher_span_logprobs": [B, G] float32, "teacher_group_mask": [B, G] bool}.
        """
        check_layout(views, teacher_group_ids)
        return span_payload(self.token_logprobs(views), teacher_group_ids, num_groups)

    def begin(self) -> "ScoringRound":
        """A round of requests for one batch, sent view by view as each becomes known (a trainer:
        as each rollout returns, while the others still generate); see ScoringRound."""
        if self.model_name is None:
            self.check()
        return ScoringRound(self)

    # ------------------------------------------------------------------ requests
    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=self.concurrency),
        )

    async def _request(self, session: aiohttp.ClientSession, method: str, path: str, body: dict | None = None) -> _Answer:
        """One HTTP call, retried with exponential backoff after timeouts, lost connections and
        transient statuses. Returns the first non-transient answer."""
        for attempt in range(self.retries + 1):
            try:
                async with session.request(method, self.url + path, json=body) as response:
                    answer = _Answer(response.status, await response.text())
                if answer.status not in TRANSIENT_STATUSES:
                    return answer
                problem = f"HTTP {answer.status}: {answer.text[:300]}"
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {str(exc) or 'no answer within gold.teacher_timeout'}"
            if attempt < self.retries:
                self._retried += 1
                await asyncio.sleep(self.backoff * 2**attempt)
        raise ServedTeacherError(
            f"{method} {self.url}{path} failed {self.retries + 1} times, last: {problem}. Fix: check that "
            f"gold.teacher_url={self.url} is a running vLLM server; raise gold.teacher_timeout "
            f"(now {self.timeout:g} s) or gold.teacher_retries (now {self.retries}) for a busy one"
        )

    def _json(self, answer: _Answer, path: str, model: str | None = None) -> dict:
        """The answer's JSON, or an error naming the setting a failed answer points at."""
        if answer.status == 404:
            if model is not None and "model" in answer.text.lower():
                raise ServedTeacherError(
                    f"the server at gold.teacher_url={self.url} does not serve model {model!r}: "
                    f"{answer.text[:300]}. Fix: set gold.teacher_model_name to a name listed at {self.url}/v1/models"
                )
            raise ServedTeacherError(
                f"no {path} at gold.teacher_url={self.url} (HTTP 404). Fix: set gold.teacher_url to the root URL "
                "of a vLLM server (e.g. http://host:8000, the address `vllm serve` prints, without /v1)"
            )
        if answer.status != 200:
            raise ServedTeacherError(
                f"{path} at gold.teacher_url={self.url} answered HTTP {answer.status}: {answer.text[:500]}. "
                "Fix: a prompt longer than the server's --max-model-len needs gold.max_teacher_length below it; "
                "an unknown token id means the server's model is not the teacher of trainer.ref.model.path"
            )
        try:
            return json.loads(answer.text)
        except ValueError:
            raise ServedTeacherError(
                f"{path} at gold.teacher_url={self.url} answered with malformed JSON ({answer.text[:200]!r}). "
                "Fix: point gold.teacher_url at a vLLM server's root URL"
            ) from None

    async def _served_model(self, session: aiohttp.ClientSession) -> dict:
        """The /v1/models card of gold.teacher_model_name, or of the only model the server lists."""
        listing = self._json(await self._request(session, "GET", "/v1/models"), "/v1/models")
        cards = [m for m in listing.get("data", []) if isinstance(m, dict)] if isinstance(listing, dict) else []
        names = [m.get("id") for m in cards]
        if self.model_name is not None and self.model_name not in names:
            raise ServedTeacherError(
                f"gold.teacher_model_name={self.model_name!r} is not served at gold.teacher_url={self.url} "
                f"(it serves {names}). Fix: use one of those names (vLLM's --served-model-name)"
            )
        if self.model_name is None and len(names) != 1:
            raise ServedTeacherError(
                f"gold.teacher_model_name is null but the server at gold.teacher_url={self.url} lists {names}. "
                "Fix: set gold.teacher_model_name to the teacher's served name"
            )
        return cards[names.index(self.model_name)] if self.model_name is not None else cards[0]

    async def _score(self, session: aiohttp.ClientSession, model: str, prompt_ids: list[int], response_ids: list[int]) -> torch.Tensor:
        ids = prompt_ids + response_ids
        body = {"model": model, "prompt": ids, "max_tokens": 1, "prompt_logprobs": 0, "temperature": 1.0}
        answer = self._json(await self._request(session, "POST", "/v1/completions", body), "/v1/completions", model)
        return response_logprobs(answer, ids, len(prompt_ids), self.url)

    async def _check(self) -> None:
        async with self._session() as session:
            card = await self._served_model(session)
            self.model_name = card["id"]
            served_len = card.get("max_model_len")
            # A prompt of max_model_len tokens leaves no room for the one generated token.
            if served_len is not None and (self.max_teacher_length is None or self.max_teacher_length > served_len - 1):
                raise ServedTeacherError(
                    f"gold.max_teacher_length={self.max_teacher_length} but the server at gold.teacher_url={self.url} "
                    f"accepts at most {served_len - 1} prompt tokens (max_model_len {served_len}). Fix: set "
                    f"gold.max_teacher_length to {served_len - 1} or less, or serve with a larger --max-model-len"
                )
            ids = self.tokenizer(CHECK_TEXT, add_special_tokens=False)["input_ids"]
            answer = self._json(
                await self._request(session, "POST", "/v1/completions",
                                    {"model": self.model_name, "prompt": ids, "max_tokens": 1, "prompt_logprobs": 0}),
                "/v1/completions", self.model_name,
            )
            response_logprobs(answer, ids, 1, self.url)
            self._check_spelling(answer["choices"][0]["prompt_logprobs"], ids)

    def _check_spelling(self, entries: list, ids: list[int]) -> None:
        """Each returned decoded_token must be a spelling of its id under the teacher tokenizer:
        its decode (newer vLLM, possibly with SentencePiece's leading space restored) or its raw
        vocabulary piece (older vLLM)."""
        for position in range(1, len(ids)):
            token_id = ids[position]
            served = entries[position][str(token_id)].get("decoded_token")
            piece = self.tokenizer.convert_ids_to_tokens(token_id)
            decoded = self.tokenizer.decode([token_id])
            own = {decoded, piece, piece.replace("\u2581", " ")}
            if served not in own:
                raise ServedTeacherError(
                    f"the server at gold.teacher_url={self.url} (model {self.model_name!r}) spells token id {token_id} "
                    f"as {served!r}, the teacher tokenizer of trainer.ref.model.path ({self.tokenizer.name_or_path}) "
                    f"as {decoded!r}: they are different tokenizers and every reward would be wrong. Fix: serve the "
                    "teacher whose tokenizer trainer.ref.model.path names, or point trainer.ref.model.path at it"
                )


class ScoringRound:
    """The requests of one batch, in flight on an event loop in a thread of their own.

    send(row, view) puts a view's request on its way at once and returns (callable from any thread
    or event loop: the generator calls it as each rollout returns, so scoring overlaps generation);
    at most teacher.concurrency requests run at a time. token_logprobs(n) waits for rows 0..n-1 and
    ends the round; a bad answer fails the whole round (the other requests are cancelled) with no
    log-prob returned. One round at a time per ServedTeacher (its retry count is the round's).
    """

    def __init__(self, teacher: ServedTeacher):
        self.teacher = teacher
        self.futures: dict[int, concurrent.futures.Future] = {}
        self.views: dict[int, object] = {}
        self.first_sent = self.last_answer = None
        self.requests = 0  # sent in this round (a row sent again counts again)
        self._session = self._limit = None
        teacher._retried = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="served-teacher", daemon=True)
        self._thread.start()

    def send(self, row: int, view) -> None:
        """Send the request of the batch's row `row` (a view with .prompt_ids and .response_ids)."""
        if view.response_ids and not view.prompt_ids:
            raise ValueError(
                f"teacher view {row} has no prompt token, so its first response token has no log-prob "
                "(the server returns null at position 0); give the teacher a prompt."
            )
        if self.first_sent is None:
            self.first_sent = time.perf_counter()
        self.views[row] = view
        self.requests += bool(view.response_ids)
        self.futures[row] = asyncio.run_coroutine_threadsafe(self._score(view), self._loop)

    async def _score(self, view) -> torch.Tensor:
        if not view.response_ids:
            return torch.zeros(0)
        if self._session is None:  # created on the round's own loop, which runs one task at a time
            self._session, self._limit = self.teacher._session(), asyncio.Semaphore(self.teacher.concurrency)
        async with self._limit:
            logprobs = await self.teacher._score(self._session, self.teacher.model_name, list(view.prompt_ids), list(view.response_ids))
        self.last_answer = time.perf_counter()
        return logprobs

    def token_logprobs(self, n: int) -> list[torch.Tensor]:
        """The log-probs of rows 0..n-1, each float32 [len(response_ids)], once all are answered;
        sets teacher.metrics (gold/teacher_requests: requests sent in the round, gold/teacher_retries, gold/teacher_seconds: first
        request to last answer, gold/teacher_wait_seconds: how long this call waited)."""
        missing = sorted(set(range(n)) - set(self.futures))
        start = time.perf_counter()
        try:
            if missing:
                raise ValueError(f"rows {missing[:8]} of the batch's {n} were never sent to the served teacher")
            futures = [self.futures[row] for row in range(n)]
            done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
            for future in futures:  # the first failure in row order, without waiting for the rest
                if future in done and future.exception() is not None:
                    raise future.exception()
            result = [future.result() for future in futures]
        finally:
            self.close()
        self.teacher.metrics = {
            "gold/teacher_requests": float(self.requests),
            "gold/teacher_retries": float(self.teacher._retried),
            "gold/teacher_seconds": (self.last_answer - self.first_sent) if self.requests else 0.0,
            "gold/teacher_wait_seconds": time.perf_counter() - start,
        }
        return result

    def close(self) -> None:
        """End the round (idempotent): cancel what still runs, close the session, stop the thread."""
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _close(self) -> None:
        # After a failure (or rows past n) requests may still run: stop them, then the session.
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


@dataclass
class TokenView:
    """A teacher view with one vocabulary: the teacher reads the student's own prompt and response ids."""

    prompt_ids: list[int]
    response_ids: list[int]


class ServedTeacherStep:
    """The served teacher's part of a training step (gold.teacher_backend=served), the same for the
    trainers of every SkyRL version. In the order a step calls it:

      generating(generator)        around the step's generation (begin() and the generator's hook)
      rollout_done(row, ...)       from the generator as each rollout returns: its view is sent at once,
                                   so scoring overlaps the generation of the other rollouts
      batch_views(...)             once the batch is generated: rows not sent yet, or whose rollout the
                                   generator changed after reporting it, are sent now; returns the
                                   batch's teacher views (None with one vocabulary)
      add_payload(batch)           in the reward step: waits for the answers, adds the ref worker's
                                   payload keys to the batch; returns the gold/teacher_* metrics
      step_share()                 at the end of the step: the share of the step spent waiting

    build_views(responses, loss_masks, prompts, conversations) -> teacher views: the trainer's own view
    builder (gold_steps.teacher_views, the views of the ref-worker path); None with one vocabulary
    (TokenView of the student's ids).
    """

    def __init__(self, teacher: ServedTeacher, build_views):
        self.teacher, self.build_views = teacher, build_views
        self.round: ScoringRound | None = None
        self.sent: dict[int, tuple] = {}
        self.rows = 0
        self.started = time.perf_counter()

    def begin(self) -> None:
        if self.round is not None:  # a step that failed before its reward step leaves its round open
            self.round.close()
        self.round, self.sent, self.rows, self.started = self.teacher.begin(), {}, 0, time.perf_counter()

    @contextlib.contextmanager
    def generating(self, generator):
        """Around the trainer's generation: a new round, and the generator's `rollout_done` hook
        (GOLD's gym generators have one) pointed at rollout_done while it runs."""
        self.begin()
        reporting = hasattr(generator, "rollout_done")
        if reporting:
            generator.rollout_done = self.rollout_done
        try:
            yield
        finally:
            if reporting:
                generator.rollout_done = None

    def rollout_done(self, row: int, prompt, conversation, prompt_ids: list[int], response_ids: list[int], loss_mask: list[int]) -> None:
        """Send row `row`'s view now. prompt: the messages env.init returned; conversation: the
        messages the generator appended after them; prompt_ids, response_ids, loss_mask: the rollout's
        token ids and loss mask as the agent loop returned them (the student's prompt ids are what
        the teacher reads with one vocabulary)."""
        self._send([row], [(prompt, conversation, list(prompt_ids), list(response_ids), list(loss_mask))])

    def batch_views(self, responses: list[list[int]], loss_masks: list[list[int]], prompts, conversations, prompt_ids: list[list[int]]) -> list | None:
        """The teacher views of the batch's rows 0..n-1 (the generator's output, as add_teacher_view
        reads it). A row the generator did not report, or reported with other inputs than the batch
        holds (e.g. a loss mask SkyRL's generate rewrote after the agent loop), is sent now: every
        row is scored from exactly the inputs the ref-worker path would read."""
        n = len(responses)
        inputs = [
            (prompts[row] if prompts is not None and row < len(prompts) else None,
             conversations[row] if conversations is not None else None,
             list(prompt_ids[row]), list(responses[row]), list(loss_masks[row]))
            for row in range(n)
        ]
        rest = [row for row in range(n) if self.sent.get(row) != self._key(inputs[row])]
        self._send(rest, [inputs[row] for row in rest])
        self.rows = n
        return None if self.build_views is None else [self.round.views[row] for row in range(n)]

    def _key(self, inputs: tuple) -> tuple:
        """What a row's view is built from: with one vocabulary the token ids only."""
        _, _, prompt_ids, response_ids, _ = inputs
        return (prompt_ids, response_ids) if self.build_views is None else inputs

    def _send(self, rows: list[int], inputs: list[tuple]) -> None:
        if not rows:
            return
        if self.build_views is None:
            views = [TokenView(prompt_ids, response_ids) for _, _, prompt_ids, response_ids, _ in inputs]
        else:
            prompts, conversations, _, responses, loss_masks = (list(part) for part in zip(*inputs))
            # A missing prompt is build_views' error to report; rollouts without a recorded conversation
            # (batched generation) are single-turn.
            views = self.build_views(
                responses, loss_masks, None if None in prompts else prompts,
                None if None in conversations else conversations,
            )
        for row, view, row_inputs in zip(rows, views, inputs):
            self.sent[row] = self._key(row_inputs)
            self.round.send(row, view)

    def add_payload(self, batch) -> dict[str, float]:
        """Add teacher_span_logprobs [B, G] and teacher_group_mask [B, G] to `batch` (SkyRL's
        TrainingInputBatch after add_teacher_view), as the GOLD ref worker's pass does; rows past the
        generated ones (SkyRL's padding for data parallelism) get no group."""
        n = self.rows
        per_view = self.round.token_logprobs(n)
        groups = batch["teacher_group_ids"][:n]
        if self.build_views is None:
            # One vocabulary: the group ids are the response tokens' columns, which need not start at
            # column 0 (skyrl 0.4.0 right-aligns responses); span_payload reads them in token order.
            present = batch["response_mask"][:n] > 0
            packed = torch.full_like(groups, -1)
            packed[torch.arange(groups.shape[1]) < present.sum(-1, keepdim=True)] = groups[present]
            groups = packed
        payload = span_payload(per_view, groups, batch.metadata["gold_num_groups"])
        pad = batch.batch_size - n
        for key, value in payload.items():
            batch[key] = torch.cat([value, torch.zeros_like(value[:1]).expand(pad, -1)])
        return dict(self.teacher.metrics)

    def step_share(self) -> dict[str, float]:
        """gold/teacher_step_share: the reward step's wait for the teacher over the step so far."""
        elapsed = time.perf_counter() - self.started
        return {"gold/teacher_step_share": self.teacher.metrics.get("gold/teacher_wait_seconds", 0.0) / elapsed}


def check_layout(views: Sequence, teacher_group_ids: torch.Tensor) -> None:
    """teacher_group_ids [B, R_t] must have a row per view and room for each view's response."""
    b, width = teacher_group_ids.shape
    if b != len(views) or any(len(v.response_ids) > width for v in views):
        raise ValueError(
            f"teacher_group_ids is [{b}, {width}] but there are {len(views)} views with up to "
            f"{max((len(v.response_ids) for v in views), default=0)} response tokens; pass the group ids "
            "collate_views made from these views."
        )


def span_payload(per_view: Sequence[torch.Tensor], teacher_group_ids: torch.Tensor, num_groups: int) -> dict[str, torch.Tensor]:
    """The ref worker's reward-mode payload from each view's token log-probs.

    per_view: B tensors, row i's [len_i] log-probs of its first len_i teacher response tokens;
    teacher_group_ids: [B, R_t], row i's group ids of those tokens in its first len_i columns.
    Returns {"teacher_span_logprobs": [B, G] float32, "teacher_group_mask": [B, G] bool}.
    """
    token_lp = torch.zeros(teacher_group_ids.shape, dtype=torch.float32)
    for i, lp in enumerate(per_view):
        token_lp[i, : len(lp)] = lp
    return {
        "teacher_span_logprobs": span_logprobs(token_lp, teacher_group_ids, num_groups),
        "teacher_group_mask": group_sizes(teacher_group_ids, num_groups) > 0,
    }


def response_logprobs(answer: dict, ids: list[int], num_prompt: int, url: str) -> torch.Tensor:
    """The log-probs of ids[num_prompt:] from a /v1/completions answer with prompt log-probs.

    answer["choices"][0]["prompt_logprobs"]: len(ids) entries, entry p a dict holding str(ids[p]).
    Returns float32 [len(ids) - num_prompt]; raises ServedTeacherError for a missing list, a wrong
    count, a missing token or a non-finite value.
    """
    try:
        entries = answer["choices"][0]["prompt_logprobs"]
    except (KeyError, IndexError, TypeError):
        entries = None
    if not isinstance(entries, list):
        raise ServedTeacherError(
            f"the answer of gold.teacher_url={url} has no choices[0].prompt_logprobs. Fix: use a vLLM server "
            "(its /v1/completions returns prompt log-probs; an OpenAI-only server does not)"
        )
    if len(entries) != len(ids):
        raise ServedTeacherError(
            f"gold.teacher_url={url} returned {len(entries)} prompt log-probs for {len(ids)} sent tokens. Fix: use "
            "a vLLM server without prompt rewriting (no chat template or BOS added to token-id prompts)"
        )
    try:
        values = [entries[p][str(ids[p])]["logprob"] for p in range(num_prompt, len(ids))]
        logprobs = torch.tensor(values, dtype=torch.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ServedTeacherError(
            f"gold.teacher_url={url} returned prompt log-probs without the sent token's entry ({type(exc).__name__}: "
            f"{exc}). Fix: use a vLLM server that scores the token ids it is sent"
        ) from None
    if not bool(torch.isfinite(logprobs).all()):
        bad = int((~torch.isfinite(logprobs)).nonzero()[0])
        raise ServedTeacherError(
            f"gold.teacher_url={url} returned the non-finite log-prob {values[bad]} for response token {bad}. "
            "Fix: check the served teacher's weights and dtype"
        )
    return logprobs.float()


def _run(coroutine):
    """Run a coroutine to completion from synchronous code, also when the caller already runs an
    event loop (then in a worker thread with its own loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop_running = False
    else:
        loop_running = True
    if not loop_running:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


