"""Class-wise EM prototype: learn one pattern per (task, class) (optionally a stationary tile) that a fresh surrogate fits fastest."""
import sys, json, time, numpy as np, torch, torch.nn.functional as F
from synthetic_shortcuts import load, CNN, crop, train_eval, retained
torch.set_num_threads(2)

def learn_patterns(d, eps, tile=0, rounds=30, gen_steps=10, sur_steps=10, bs=128, lr=0.1, seed=0, aug=True, restart=0, fusion="sum"):
    torch.manual_seed(seed); rng = np.random.default_rng(seed)
    X = torch.tensor(d["train"][0]).permute(0, 3, 1, 2).float() / 255; N, C, H, W = X.shape
    tasks = d["tasks"]; Y = torch.stack([torch.tensor(d["train"][1][n]) for n, _, _ in tasks], 1).long()
    h, w = (tile, tile) if tile else (H, W)
    P = [torch.nn.Parameter(0.01 * torch.randn(k, C, h, w)) for _, _, k in tasks]
    opt_p = torch.optim.Adam(P, lr=lr)
    def delta(yb):
        s = sum(p[yb[:, t]] for t, p in enumerate(P))
        if tile: s = s.repeat(1, 1, H // tile + 1, W // tile + 1)[:, :, :H, :W]
        return eps / 255 * torch.tanh(s)
    def surrogate(): 
        m = CNN(C, [k for _, _, k in tasks]); return m, torch.optim.Adam(m.parameters(), 1e-3)
    m, opt_m = surrogate()
    def loss_of(model, xb, yb): return sum(F.cross_entropy(o, yb[:, t]) for t, o in enumerate(model(xb)))
    for r in range(rounds):
        if restart and r % restart == 0: m, opt_m = surrogate()
        m.train()
        for _ in range(sur_steps):
            b = torch.randint(0, N, (bs,)); xb = (X[b] + delta(Y[b]).detach()).clamp(0, 1)
            if aug: xb = crop(xb)
            l = loss_of(m, xb, Y[b]); opt_m.zero_grad(); l.backward(); opt_m.step()
        for _ in range(gen_steps):
            b = torch.randint(0, N, (bs,)); xb = (X[b] + delta(Y[b])).clamp(0, 1)
            if aug: xb = crop(xb)
            l = loss_of(m, xb, Y[b]); opt_p.zero_grad(); l.backward(); opt_p.step()
    with torch.no_grad():
        out = []
        for k in range(0, N, 512): out.append(delta(Y[k:k+512]))
        D = torch.cat(out).permute(0, 2, 3, 1).numpy() * 255
    return np.clip(np.round(d["train"][0] + D), 0, 255).astype(np.uint8), float(l)

if __name__ == "__main__":
    spec = sys.argv[1]; d = load(spec); cells = json.loads(sys.argv[2])
    cleans = {a: train_eval(d, d["train"][0], aug=a) for a in (False, True)}
    for cell in cells:
        t = time.time(); xp, last = learn_patterns(d, **cell); tg = time.time() - t
        for a in (False, True):
            t = time.time(); prot = train_eval(d, xp, aug=a); tot, per = retained(cleans[a], prot)
            print(spec, json.dumps(cell), "aug" if a else "plain", f"retained {tot:.3f}", {k: round(v, 2) for k, v in per.items()}, f"gen {tg:.0f}s train {time.time()-t:.0f}s lastloss {last:.3f}", flush=True)
