"""A stand-in for a vLLM server's OpenAI-compatible API: a real HTTP server on 127.0.0.1.

Implements what the served teacher uses: GET /v1/models (with max_model_len) and POST
/v1/completions with token-id prompts, max_tokens=1 and prompt_logprobs=0, answering
choices[0].prompt_logprobs as vLLM does (null at position 0, then {str(id): {logprob, rank,
decoded_token}}) and unknown models with vLLM's 404. Log-probs come from a tiny HF model, or, with no
model, from `precomputed_logprobs` (the benchmark: no forward on the server). Fault switches make the
next answers bad on purpose. Run as a module to serve precomputed log-probs from a subprocess:
    python -m gold_distillation.tests.vllm_standin --tokenizer PATH [--name teacher]
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time

import torch
import uvicorn
from fastapi import Body, FastAPI
from fastapi.responses import Response

# Names of the faults a test can queue; each is used by one /v1/completions request, in order.
FAULTS = ("503", "slow", "malformed", "missing", "short", "long", "nan", "wrong_key")


def precomputed_logprobs(ids: torch.Tensor) -> torch.Tensor:
    """A fixed, id-dependent log-prob per token in (-10.1, -0.01]: ids [N] -> float64 [N]."""
    return -((ids.double() * 2654435761) % 1009) / 100.0 - 0.01


class StandInVLLM:
    """tokenizer: spells decoded_token and bounds the vocabulary (a test passes another tokenizer
    than the client's to play a wrong server); model: a causal LM scoring the ids, or None for
    precomputed log-probs; slow_seconds: how long a "slow" answer takes."""

    def __init__(self, tokenizer, model=None, served_name: str = "teacher", max_model_len: int = 4096, slow_seconds: float = 2.0):
        self.tokenizer, self.model, self.served_name = tokenizer, model, served_name
        self.max_model_len, self.slow_seconds = max_model_len, slow_seconds
        self.vocab_size = model.config.vocab_size if model is not None else len(tokenizer)
        self.faults: list[str] = []
        self.completions = 0
        self._lock = threading.Lock()
        self._spelling: dict[int, str] = {}
        self.app = self._build_app()
        self._server = self._thread = None
        self.port = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ HTTP
    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        def models():
            card = {"id": self.served_name, "object": "model", "owned_by": "vllm", "max_model_len": self.max_model_len}
            return {"object": "list", "data": [card]}

        # A plain def: FastAPI runs it in a worker thread, so slow answers block no one else.
        @app.post("/v1/completions")
        def completions(body: dict = Body(...)):
            with self._lock:
                self.completions += 1
                fault = self.faults.pop(0) if self.faults else None
            return self._complete(body, fault)

        return app

    @staticmethod
    def _error(status: int, message: str, kind: str) -> Response:
        content = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": status}})
        return Response(content, status_code=status, media_type="application/json")

    def _complete(self, body: dict, fault: str | None) -> Response:
        if body.get("model") != self.served_name:
            return self._error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        ids = body.get("prompt")
        if not (isinstance(ids, list) and ids and all(isinstance(i, int) for i in ids)):
            return self._error(400, "this stand-in takes one prompt of token ids", "BadRequestError")
        if len(ids) + int(body.get("max_tokens", 16)) > self.max_model_len:
            return self._error(
                400, f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{len(ids) + int(body.get('max_tokens', 16))} tokens.", "BadRequestError")
        if max(ids) >= self.vocab_size or min(ids) < 0:
            return self._error(400, f"Token id {max(ids)} is out of vocabulary", "BadRequestError")
        if fault == "503":
            return self._error(503, "Service Unavailable", "ServiceUnavailableError")
        if fault == "slow":
            time.sleep(self.slow_seconds)
        if fault == "malformed":
            return Response('{"choices": [{"prompt_logprobs": [null, {"1', media_type="application/json")
        entries = self._prompt_logprobs(ids)
        if fault == "short":
            entries = entries[:-1]
        elif fault == "long":
            entries = entries + entries[-1:]
        elif fault == "nan":
            next(iter(entries[-1].values()))["logprob"] = float("nan")
        elif fault == "wrong_key":
            entries[-1] = {str(ids[-1] + 1): next(iter(entries[-1].values()))}
        choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": "length", "stop_reason": None}
        if fault != "missing":
            choice["prompt_logprobs"] = entries
        answer = {
            "id": f"cmpl-standin-{self.completions}", "object": "text_completion", "created": int(time.time()),
            "model": self.served_name, "choices": [choice],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": 1, "total_tokens": len(ids) + 1},
        }
        # json.dumps writes NaN as vLLM's server would pass it on (FastAPI's encoder refuses it).
        return Response(json.dumps(answer), media_type="application/json")

    # ------------------------------------------------------------------ scoring
    def _prompt_logprobs(self, ids: list[int]) -> list:
        tokens = torch.tensor(ids)
        if self.model is None:
            logprobs, ranks = precomputed_logprobs(tokens[1:]), torch.ones(len(ids) - 1, dtype=torch.long)
        else:
            with torch.no_grad(), self._lock:
                rows = torch.log_softmax(self.model(input_ids=tokens[None]).logits[0, :-1].double(), dim=-1)
            logprobs = rows.gather(-1, tokens[1:, None]).squeeze(-1)
            ranks = (rows > logprobs[:, None]).sum(-1) + 1
        entries = [None]
        for token_id, logprob, rank in zip(ids[1:], logprobs.tolist(), ranks.tolist()):
            entries.append({str(token_id): {"logprob": logprob, "rank": rank, "decoded_token": self._spell(token_id)}})
        return entries

    def _spell(self, token_id: int) -> str:
        """vLLM's decoded_token of a prompt token: the tokenizer's decode of that id alone."""
        if token_id not in self._spelling:
            self._spelling[token_id] = self.tokenizer.decode([token_id])
        return self._spelling[token_id]

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "StandInVLLM":
        """Serve on a free port of 127.0.0.1 from a background thread; returns once it answers."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=1, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the vLLM stand-in did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> "StandInVLLM":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve precomputed prompt log-probs on 127.0.0.1 (no model).")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder (spells decoded_token)")
    parser.add_argument("--name", default="teacher", help="served model name")
    parser.add_argument("--max-model-len", type=int, default=1 << 20)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    server = StandInVLLM(AutoTokenizer.from_pretrained(args.tokenizer), None, args.name, args.max_model_len).start()
    print(f"PORT {server.port}", flush=True)
    try:
        server._thread.join()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
