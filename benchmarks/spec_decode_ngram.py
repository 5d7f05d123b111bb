"""N-gram speculative decoding on an input-grounded prompt (a ~400-token text the answer copies), batch 1: decode
tokens/s with and without speculation in one process, runs interleaved, and whether the greedy outputs are equal.

    PYTHONPATH=. python benchmarks/spec_decode_ngram.py [--model PATH] [-k 4] [-n 192] [-r 3]
"""

from __future__ import annotations

import argparse
import json
import time

from mistralpy import LLM, SamplingParams

TEXT = (
    "The lighthouse on the northern cape was built in 1871 from granite quarried on the island itself. Its keeper, "
    "a retired ship's carpenter named Tomas Ek, kept a logbook in which he wrote the weather, the ships that passed "
    "and the birds that struck the lantern glass during the autumn migration. For forty years the light burned "
    "paraffin; in 1912 it was converted to acetylene, and in 1953 to electricity, when a cable was laid across the "
    "strait. The keeper's cottage stands fifty metres from the tower. It has two rooms, a kitchen with an iron stove "
    "and a cellar cut into the rock where potatoes kept through the winter. The island has no trees. Sheep graze on "
    "the slopes between the tower and the small harbour, and in summer the cliffs on the western side are crowded "
    "with guillemots and razorbills. Visitors come by ferry from the mainland twice a week between June and August. "
    "They climb the one hundred and twelve steps of the spiral staircase to the gallery, from which, on a clear day, "
    "one can see the mountains of the mainland forty kilometres away. The logbooks are now kept in the county "
    "archive. They record, among other things, the great storm of January 1902, when waves broke over the gallery "
    "and the keeper and his wife sheltered in the cellar for three days; the winter of 1942, when the strait froze "
    "and a fox walked across the ice and lived on the island until spring; and the night in 1967 when the light "
    "failed for eleven minutes and a fishing boat ran aground on the reef below the cliffs, without loss of life. "
    "The light was automated in 1989, and the last keeper left the island that autumn."
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("-k", type=int, default=4, help="num_speculative_tokens")
    p.add_argument("-n", type=int, default=192, help="tokens to generate")
    p.add_argument("-r", type=int, default=3, help="timed runs of each")
    args = p.parse_args()
    spec = {"method": "ngram", "num_speculative_tokens": args.k, "prompt_lookup_min": 1, "prompt_lookup_max": 4}
    llms = {"plain": LLM(args.model), "ngram": LLM(args.model, speculative_config=spec)}
    tokenizer = llms["plain"].get_tokenizer()
    messages = [{"role": "user", "content": f"Repeat the following text exactly.\n\n{TEXT}"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    params = SamplingParams(temperature=0, max_tokens=args.n, ignore_eos=False)
    outputs, rates = {}, {name: [] for name in llms}
    for name, llm in llms.items():  # warm-up
        outputs[name] = llm.generate([prompt], params)[0].outputs[0]
    for _ in range(args.r):
        for name, llm in llms.items():
            start = time.perf_counter()
            out = llm.generate([prompt], params)[0].outputs[0]
            rates[name].append(len(out.token_ids) / (time.perf_counter() - start))
            assert out.token_ids == outputs[name].token_ids, f"{name}: greedy output changed between runs"
    stats = llms["ngram"].engine.speculator.stats
    report = {
        "prompt_tokens": len(prompt), "generated_tokens": len(outputs["plain"].token_ids),
        "same_output": outputs["plain"].token_ids == outputs["ngram"].token_ids,
        "tok_per_s": {name: [round(r, 2) for r in values] for name, values in rates.items()},
        "speedup_of_medians": round(sorted(rates["ngram"])[len(rates["ngram"]) // 2]
                                    / sorted(rates["plain"])[len(rates["plain"]) // 2], 3),
        "acceptance_rate": round(stats.acceptance_rate, 3),
        "mean_accepted_length": round(stats.mean_accepted_length, 3),
        "answer_start": outputs["ngram"].text[:120],
    }  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
