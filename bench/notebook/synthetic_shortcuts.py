"""Lab notebook script (first hypotheses, 2026-12-04): synthetic class-wise shortcuts vs an independent CNN, in memory.

usage: python bench/notebook/synthetic_shortcuts.py SOURCE JSON_LIST_OF_RECIPES  (see bench/notebook.md)
Caches the source as npz under $MTLUE_NOTEBOOK_CACHE (default /tmp/mtlue-notebook-cache). Kept as run; bench/lab.py is the tool."""
import sys, time, json, os, numpy as np, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(2)
CACHE = os.environ.get("MTLUE_NOTEBOOK_CACHE", "/tmp/mtlue-notebook-cache"); os.makedirs(CACHE, exist_ok=True)

def load(spec):
    path = f"{CACHE}/{spec.replace(':','_').replace('/','_')}.npz"
    if os.path.exists(path):
        z = np.load(path, allow_pickle=True); return z["d"].item()
    from mtlue.data import open_source
    s = open_source(spec); d = {"tasks": [(t.name, t.kind, t.num_classes) for t in s.tasks]}
    for split in ("train", "test"):
        xs, ys = [], {t.name: [] for t in s.tasks}
        for b in s.batches(split, 512):
            xs.append(b.images)
            for t in s.tasks: ys[t.name].append(b.labels[t.name])
        d[split] = (np.concatenate(xs), {k: np.concatenate(v) for k, v in ys.items()})
    np.savez(path, d=np.array(d, dtype=object)); return d

class CNN(nn.Module):
    def __init__(s, c, heads, w=32):
        super().__init__()
        def blk(i, o): return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
        s.f = nn.Sequential(blk(c, w), blk(w, 2*w), blk(2*w, 4*w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        s.h = nn.ModuleList([nn.Linear(4*w, k) for k in heads])
    def forward(s, x):
        z = s.f(x); return [h(z) for h in s.h]

def crop(x, pad=4):
    n, c, h, w = x.shape; xp = F.pad(x, (pad,)*4)
    i = torch.randint(0, 2*pad+1, (n,)); j = torch.randint(0, 2*pad+1, (n,))
    idx_h = (i[:, None] + torch.arange(h)[None]); idx_w = (j[:, None] + torch.arange(w)[None])
    return xp[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], idx_h[:, None, :, None], idx_w[:, None, None, :]]

def train_eval(d, xtr, epochs=8, aug=False, seed=0, bs=128):
    torch.manual_seed(seed); tasks = d["tasks"]
    heads = [k for _, _, k in tasks]
    X = torch.tensor(xtr).permute(0, 3, 1, 2).float() / 255
    Y = torch.stack([torch.tensor(d["train"][1][n]) for n, _, _ in tasks], 1).long()
    Xt = torch.tensor(d["test"][0]).permute(0, 3, 1, 2).float() / 255
    Yt = torch.stack([torch.tensor(d["test"][1][n]) for n, _, _ in tasks], 1).long()
    m = CNN(X.shape[1], heads); opt = torch.optim.Adam(m.parameters(), 1e-3)
    hist = []
    for ep in range(epochs):
        m.train(); perm = torch.randperm(len(X))
        for k in range(0, len(X), bs):
            b = perm[k:k+bs]; x = X[b]
            if aug: x = crop(x)
            out = m(x); loss = sum(F.cross_entropy(o, Y[b, t]) for t, o in enumerate(out))
            opt.zero_grad(); loss.backward(); opt.step()
    m.eval(); preds = []
    with torch.no_grad():
        for k in range(0, len(Xt), 512): preds.append(torch.stack([o.argmax(1) for o in m(Xt[k:k+512])], 1))
    P = torch.cat(preds).numpy(); Yn = Yt.numpy(); res = {}
    for t, (n, kind, k) in enumerate(tasks):
        if kind == "binary":
            acc = np.mean([np.mean(P[Yn[:, t] == c, t] == c) for c in (0, 1)]); ch = 0.5
        else:
            acc = np.mean(P[:, t] == Yn[:, t]); ch = np.bincount(d["train"][1][n], minlength=k).max() / len(d["train"][1][n])
            ch = np.mean(Yn[:, t] == np.bincount(d["train"][1][n], minlength=k).argmax())
        res[n] = (float(acc), float(ch))
    return res

def retained(clean, prot):
    num = den = 0; per = {}
    for n in clean:
        c, ch = clean[n]; p, _ = prot[n]; g = max(c - ch, 1e-9)
        per[n] = (p - ch) / g; num += (p - ch); den += g
    return num / den, per

# ---------- recipes ----------
def tiles(rng, shape, n):  # n random ±1 tiles
    return rng.choice([-1.0, 1.0], size=(n,) + shape)

def stationary(d, eps, fusion="sign", period=8, seed=0, channels=True):
    X, Y = d["train"]; N, H, W, C = X.shape; rng = np.random.default_rng(seed)
    tasks = d["tasks"]; T = len(tasks)
    def tile_full(t): return np.tile(t, (H // t.shape[0] + 1, W // t.shape[1] + 1, 1))[:H, :W]
    tab = {n: [tile_full(x) for x in tiles(rng, (period, period, C if channels else 1), k)] for n, _, k in tasks}
    if fusion == "joint":
        keys = np.stack([Y[n] for n, _, _ in tasks], 1); uniq, inv = np.unique(keys, axis=0, return_inverse=True)
        pats = np.stack([tile_full(x) for x in tiles(rng, (period, period, C), len(uniq))])
        delta = pats[inv.ravel()]
    elif fusion == "split":  # each pixel of the tile owned by one task
        owner = rng.integers(0, T, size=(period, period, 1)); owner = tile_full(owner)[..., :1]
        delta = np.zeros(X.shape, np.float32)
        for t, (n, _, k) in enumerate(tasks):
            P = np.stack(tab[n]); delta += np.where(owner == t, 1.0, 0.0) * P[Y[n]]
    else:
        S = sum(np.stack(tab[n])[Y[n]] for n, _, _ in tasks)
        delta = np.sign(S + 1e-3 * rng.standard_normal(S.shape)) if fusion == "sign" else S / T
    delta = np.broadcast_to(delta, X.shape) * eps
    return np.clip(np.round(X + delta), 0, 255).astype(np.uint8)

def grating_table(tasks, H, W, C, seed=0, colour=True):
    """Per (task, class) a square-wave grating: distinct frequency/orientation per class, colour sign per channel."""
    rng = np.random.default_rng(seed); yy, xx = np.mgrid[0:H, 0:W]
    total = sum(k for _, _, k in tasks)
    # frequencies (cycles/pixel) on a set of distinct (fx, fy) pairs, high-ish band (periods 2..8 px)
    cands = [(fx, fy) for fx in np.arange(-4, 5) / 8 for fy in np.arange(0, 5) / 8 if (fx, fy) != (0, 0) and not (fy == 0 and fx < 0)]
    rng.shuffle(cands); tab = {}; i = 0
    for n, _, k in tasks:
        pats = []
        for c in range(k):
            fx, fy = cands[i % len(cands)]; i += 1
            phase = rng.uniform(0, 2 * np.pi)
            g = np.sign(np.cos(2 * np.pi * (fx * xx + fy * yy) + phase) + 1e-6)
            col = rng.choice([-1.0, 1.0], size=C) if colour else np.ones(C)
            pats.append(g[..., None] * col)
        tab[n] = np.stack(pats)
    return tab

def grating(d, eps, fusion="sign", seed=0, colour=True, only=None, weights=None):
    X, Y = d["train"]; N, H, W, C = X.shape; tasks = d["tasks"]; T = len(tasks)
    tab = grating_table(tasks, H, W, C, seed, colour)
    names = [n for n, _, _ in tasks if only is None or n in only]
    S = sum((weights or {}).get(n, 1.0) * tab[n][Y[n]] for n in names)
    delta = np.sign(S + 1e-3 * np.random.default_rng(seed).standard_normal(S.shape)) if fusion == "sign" else S / T
    return np.clip(np.round(X + delta * eps), 0, 255).astype(np.uint8)

RECIPES = {"stationary": stationary, "grating": grating}

if __name__ == "__main__":
    spec = sys.argv[1]; d = load(spec); out = {}
    recipes = json.loads(sys.argv[2])
    for aug in (False, True):
        t = time.time(); clean = train_eval(d, d["train"][0], aug=aug); tc = time.time() - t
        print(spec, "clean", "aug" if aug else "plain", {k: round(v[0], 3) for k, v in clean.items()}, "chance", {k: round(v[1], 3) for k, v in clean.items()}, f"{tc:.0f}s", flush=True)
        for r in recipes:
            r=dict(r); kind=r.pop("kind","stationary"); xp = RECIPES[kind](d, **r); r["kind"]=kind; t = time.time(); prot = train_eval(d, xp, aug=aug)
            tot, per = retained(clean, prot)
            print(spec, json.dumps(r), "aug" if aug else "plain", f"retained {tot:.3f}", {k: round(v, 2) for k, v in per.items()}, f"{time.time()-t:.0f}s", flush=True)
