"""Teacher-forcing training steps of the Flickr8k-sized decoder (random regions, Flickr8k's
caption lengths, batch 96, bf16 autocast) with N threads: ms per step.

    .venv/bin/python benchmarks/thread_split_probe.py 2      # one process, two threads
    .venv/bin/python benchmarks/thread_split_probe.py 1 & .venv/bin/python benchmarks/thread_split_probe.py 1; wait

Two one-thread processes side by side against one two-thread process: whether a recipe's
independent stages would go faster run together than one after another.
"""
import json, time, random, torch, sys
from captioner.models.decoder import ShowAttendTellDecoder, DecoderConfig
threads = int(sys.argv[1]); torch.set_num_threads(threads); torch.manual_seed(0); random.seed(0)
V = 2543
lens = [min(20, len(l.split('\t')[1].split())) for l in open(str(__import__('pathlib').Path(__file__).resolve().parents[2] / 'shared/datasets/flickr8k/Flickr8k.token.txt'))]
dec = ShowAttendTellDecoder(DecoderConfig(512,512,512,0.5,True), V, 1280)
opt = torch.optim.Adam(dec.parameters(), 5e-4)
def batch():
    L = sorted([random.choice(lens) for _ in range(96)], reverse=True)
    caps = torch.zeros(96, max(L) + 2, dtype=torch.long)
    for i,l in enumerate(L): caps[i,:l+2] = torch.randint(4, V, (l+2,))
    return torch.randn(96, 49, 1280).relu(), caps
def step(regions, caps):
    with torch.autocast('cpu', dtype=torch.bfloat16):
        mask = caps[:,1:] != 0
        out = dec(regions, caps, lengths=mask.sum(1))
        loss = torch.nn.functional.cross_entropy(out.word_logits.float(), caps[:,1:][out.rows, out.steps])
    opt.zero_grad(); loss.backward(); opt.step()
bs = [batch() for _ in range(22)]
for b in bs[:2]: step(*b)
t=time.perf_counter()
for b in bs[2:]: step(*b)
print(threads, 'threads ms/step', round((time.perf_counter()-t)/20*1000,1), flush=True)
