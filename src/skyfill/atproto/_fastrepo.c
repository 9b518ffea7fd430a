/*
 * skyfill.atproto._fastrepo: the repo decoder's hot path in C.
 *
 * The pure-Python decoder (repo.py, mst.py, record.py) is the definition of what a
 * repository decodes to. This module computes the same result for the repositories it
 * is sure about, many times faster, and declines everything else: any irregularity
 * (a malformed CAR, a CID that is not CIDv1 sha-256, a block that does not hash to its
 * CID, an MST that does not verify, a record that is not canonical atproto DAG-CBOR, a
 * float, an odd key...) makes it answer "not mine" (None / -1), and the caller decodes
 * that repository with the Python path, which raises the precise InvalidRepo. So the C
 * code never decides that a repository is invalid, only that it is plainly valid.
 *
 * CarIndex(car)              index the CAR's blocks (ValueError: not a plain CAR v1)
 *   .root                    the first root CID (bytes)
 *   .block(cid)              the block, checked against its CID; None if missing/mismatch
 *   .walk(data, nsid_ok, keep, max_record)
 *                            walk and verify the MST from `data`; check every record block
 *                            against its CID; returns how many records are kept, or -1
 *   .counts()                kept records by collection, as walk() found them
 *   .columns(start, stop, uri_prefix, max_bytes)
 *                            records [start, stop) of those kept, as Arrow buffers:
 *                            (n, coll_off, coll, rkey_off, rkey, uri_off, uri, cid_off, cid,
 *                             json_off, json, created_us, created_valid, odd_created)
 *                            or None (a record to leave to the Python path)
 *
 * The event stream's methods (check_all, record, invert) are in _fastrepo_slice.h, and its
 * reader of a whole `#commit` message (commit_event) in _fastrepo_event.h.
 *
 * The JSON text is exactly orjson.dumps(cbrrr.decode_dag_cbor(block, atjson_mode=True)),
 * checked by tests/atproto/test_fastrepo.py against that definition.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
/* OpenSSL 3's one-shot SHA256() fetches the algorithm on every call (~1 us); the low-level
   functions, deprecated but kept, run the same assembly (SHA-NI where the CPU has it). */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

static inline void sha256(const unsigned char *data, size_t n, unsigned char *digest) {
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, data, n);
    SHA256_Final(digest, &ctx);
}

#define CID_LEN 36
#define MAX_DEPTH 256
#define MAX_JSON_DEPTH 128
#define MAX_RKEY 512

static const unsigned char CID_PREFIX[4] = {0x01, 0x71, 0x12, 0x20};

/* ---------------------------------------------------------------- growable buffer */

typedef struct {
    char *data;
    size_t len, cap;
} Buf;

static int buf_reserve(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    char *p = PyMem_RawRealloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

static inline int buf_put(Buf *b, const void *src, size_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, src, n);
    b->len += n;
    return 0;
}

static inline int buf_byte(Buf *b, char c) {
    if (b->len == b->cap && buf_reserve(b, 1) < 0) return -1;
    b->data[b->len++] = c;
    return 0;
}

static void buf_free(Buf *b) {
    PyMem_RawFree(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---------------------------------------------------------------- the block index */

typedef struct {
    const unsigned char *cid; /* 36 bytes inside the CAR */
    size_t tag;               /* slot_hash(cid): most probes never read the CAR's bytes */
    const unsigned char *data;
    Py_ssize_t len;
    int checked; /* 0 unknown, 1 matches its CID, -1 does not */
} Slot;

typedef struct {
    size_t key_off; /* offset of the full key in `keys` (a node stores suffixes only) */
    uint16_t key_len;
    uint16_t coll_len;         /* bytes before the '/' */
    const Slot *record;
} Entry;

typedef struct {
    PyObject_HEAD
    PyObject *car; /* the bytes (or other buffer: an mmap), kept alive */
    Py_buffer view; /* its buffer, held while the index lives (valid when car is set) */
    int drop_pages;   /* car is a read-only file mapping: its pages may be dropped */
    size_t touched;   /* bytes read since they were last dropped */
    PyObject *counts; /* kept records by collection, after walk() */
    const unsigned char *base;
    Py_ssize_t size;
    const unsigned char *root;
    Slot *slots;
    size_t mask; /* slots: open addressing, power of two */
    Entry *entries;
    size_t n_entries, cap_entries;
    Buf keys; /* full MST keys, back to back */
} CarIndex;

static inline size_t slot_hash(const unsigned char *cid) {
    uint64_t h;
    memcpy(&h, cid + 4, 8); /* the digest is uniformly distributed */
    return (size_t)h;
}

#define DROP_EVERY ((size_t)32 << 20)

/* With drop_pages, once DROP_EVERY bytes were read: the mapping's pages leave this
   process (MADV_DONTNEED; read again, they come back from the page cache), so that a
   huge CAR's file never sits whole in the process's memory. */
static void read_bytes(CarIndex *self, size_t n) {
    self->touched += n;
    if (!self->drop_pages || self->touched < DROP_EVERY) return;
    self->touched = 0;
    madvise((void *)self->base, (size_t)self->size, MADV_DONTNEED);
}

static Slot *find_slot(CarIndex *self, const unsigned char *cid) {
    size_t tag = slot_hash(cid), i = tag & self->mask;
    for (;;) {
        Slot *s = &self->slots[i];
        if (!s->cid) return NULL;
        if (s->tag == tag && memcmp(s->cid, cid, CID_LEN) == 0) return s;
        i = (i + 1) & self->mask;
    }
}

static int slot_verified(CarIndex *self, Slot *s) {
    if (s->checked == 0) {
        unsigned char digest[32];
        read_bytes(self, (size_t)s->len);
        sha256(s->data, (size_t)s->len, digest);
        s->checked = memcmp(digest, s->cid + 4, 32) == 0 ? 1 : -1;
    }
    return s->checked == 1;
}

/* A verified dag-cbor block by CID, or NULL. */
static Slot *verified_block(CarIndex *self, const unsigned char *cid) {
    if (memcmp(cid, CID_PREFIX, 4) != 0) return NULL;
    Slot *s = find_slot(self, cid);
    return (s && slot_verified(self, s)) ? s : NULL;
}

static int read_varint(const unsigned char *p, Py_ssize_t size, Py_ssize_t *pos, uint64_t *out) {
    uint64_t value = 0;
    int shift = 0;
    while (*pos < size) {
        unsigned char byte = p[(*pos)++];
        value |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            *out = value;
            return 0;
        }
        shift += 7;
        if (shift > 63) return -1;
    }
    return -1;
}

/* The usual CAR header: {"roots": [one dag-cbor sha-256 CID], "version": 1}. */
static const unsigned char HEAD[] = {0x3a, 0xa2, 'e', 'r', 'o', 'o', 't', 's', 0x81, 0xd8, 0x2a, 'X',
                                     0x25, 0x00};
static const unsigned char TAIL[] = {0x67, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x01};

static int index_car(CarIndex *self) {
    const unsigned char *p = self->base;
    Py_ssize_t size = self->size, pos;
    Py_ssize_t root_at = sizeof(HEAD), root_end = root_at + CID_LEN;
    if (size < root_end + (Py_ssize_t)sizeof(TAIL) || memcmp(p, HEAD, sizeof(HEAD)) != 0 ||
        memcmp(p + root_at, CID_PREFIX, 4) != 0 ||
        memcmp(p + root_end, TAIL, sizeof(TAIL)) != 0)
        return -1;
    self->root = p + root_at;
    pos = root_end + sizeof(TAIL);
    /* count the sections first, to size the table */
    size_t count = 0;
    Py_ssize_t scan = pos;
    while (scan < size) {
        uint64_t len;
        if (read_varint(p, size, &scan, &len) < 0 || len > (uint64_t)(size - scan)) return -1;
        if (len <= CID_LEN || memcmp(p + scan, CID_PREFIX, 4) != 0) return -1;
        scan += (Py_ssize_t)len;
        count++;
        read_bytes(self, (size_t)len);
    }
    size_t cap = 16;
    while (cap < count + count / 2 + 1) cap *= 2;
    self->slots = PyMem_RawCalloc(cap, sizeof(Slot));
    if (!self->slots) return -2;
    self->mask = cap - 1;
    while (pos < size) {
        uint64_t len = 0; /* (scanned above: read_varint succeeds) */
        read_varint(p, size, &pos, &len);
        const unsigned char *cid = p + pos;
        size_t tag = slot_hash(cid), i = tag & self->mask;
        for (;;) {
            Slot *s = &self->slots[i];
            if (!s->cid) {
                s->cid = cid;
                s->tag = tag;
                s->data = cid + CID_LEN;
                s->len = (Py_ssize_t)len - CID_LEN;
                break;
            }
            if (s->tag == tag && memcmp(s->cid, cid, CID_LEN) == 0) { /* repeated: last wins, */
                s->data = cid + CID_LEN;               /* as in car.read_car's dict */
                s->len = (Py_ssize_t)len - CID_LEN;
                break;
            }
            i = (i + 1) & self->mask;
        }
        pos += (Py_ssize_t)len;
        read_bytes(self, (size_t)len);
    }
    return 0;
}

/* ---------------------------------------------------------------- DAG-CBOR reading */

typedef struct {
    const unsigned char *p;
    size_t pos, end;
} Reader;

/* One head: major type and argument, minimally encoded; -1 if not. */
static int read_head(Reader *r, int *major, uint64_t *arg) {
    if (r->pos >= r->end) return -1;
    unsigned char ib = r->p[r->pos++];
    *major = ib >> 5;
    unsigned ai = ib & 0x1f;
    if (ai < 24) {
        *arg = ai;
        return 0;
    }
    int n = ai == 24 ? 1 : ai == 25 ? 2 : ai == 26 ? 4 : ai == 27 ? 8 : 0;
    if (!n || r->end - r->pos < (size_t)n) return -1;
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | r->p[r->pos++];
    uint64_t least = n == 1 ? 24 : n == 2 ? 0x100 : n == 4 ? 0x10000 : 0x100000000ULL;
    if (*major == 7 || v < least) return -1; /* floats and simple values; non-minimal */
    *arg = v;
    return 0;
}

static int read_text(Reader *r, const unsigned char **s, size_t *n) {
    int major;
    uint64_t len;
    if (read_head(r, &major, &len) < 0 || major != 3 || len > r->end - r->pos) return -1;
    *s = r->p + r->pos;
    *n = (size_t)len;
    r->pos += (size_t)len;
    return 0;
}

/* A link: tag 42, then bytes 0x00 + a 36-byte CIDv1 sha-256 (dag-cbor or raw). */
static int read_link_after_tag(Reader *r, const unsigned char **cid) {
    int major;
    uint64_t len;
    if (read_head(r, &major, &len) < 0 || major != 2 || len != CID_LEN + 1 ||
        r->end - r->pos < len)
        return -1;
    const unsigned char *b = r->p + r->pos;
    if (b[0] != 0x00 || b[1] != 0x01 || (b[2] != 0x71 && b[2] != 0x55) || b[3] != 0x12 ||
        b[4] != 0x20)
        return -1;
    *cid = b + 1;
    r->pos += (size_t)len;
    return 0;
}

/* A link or null, for MST pointers. *cid = NULL for null. */
static int read_link_or_null(Reader *r, const unsigned char **cid) {
    if (r->pos >= r->end) return -1;
    unsigned char ib = r->p[r->pos];
    if (ib == 0xf6) {
        r->pos++;
        *cid = NULL;
        return 0;
    }
    if (ib != 0xd8 || r->end - r->pos < 2 || r->p[r->pos + 1] != 42) return -1;
    r->pos += 2;
    return read_link_after_tag(r, cid);
}

static int expect_key(Reader *r, char key) {
    if (r->end - r->pos < 2 || r->p[r->pos] != 0x61 || r->p[r->pos + 1] != (unsigned char)key)
        return -1;
    r->pos += 2;
    return 0;
}

/* ---------------------------------------------------------------- MST walk */

static inline int key_layer(const unsigned char *key, size_t n) {
    unsigned char d[32];
    sha256(key, n, d);
    int zeros = 0;
    for (int i = 0; i < 32; i++) {
        if (d[i] == 0) {
            zeros += 8;
            continue;
        }
        unsigned char b = d[i];
        while (!(b & 0x80)) {
            zeros++;
            b <<= 1;
        }
        break;
    }
    return zeros / 2;
}

static int walk_node(CarIndex *self, const unsigned char *cid, int has_layer, int layer,
                     int depth);

static int check_child(int has_layer, int layer) {
    return (has_layer && layer == 0) ? -1 : 0; /* a leaf-layer node has no subtree */
}

static int push_entry(CarIndex *self, const unsigned char *key, size_t n, const unsigned char *value) {
    /* keys strictly increase across the whole walk */
    if (self->n_entries) {
        Entry *last = &self->entries[self->n_entries - 1];
        const unsigned char *lk = (const unsigned char *)self->keys.data + last->key_off;
        size_t m = last->key_len < n ? last->key_len : n;
        int c = memcmp(lk, key, m);
        if (c > 0 || (c == 0 && last->key_len >= n)) return -1;
    }
    if (n > 0xFFFF) return -1;
    if (self->n_entries == self->cap_entries) {
        size_t cap = self->cap_entries ? self->cap_entries * 2 : 1024;
        Entry *e = PyMem_RawRealloc(self->entries, cap * sizeof(Entry));
        if (!e) return -2;
        self->entries = e;
        self->cap_entries = cap;
    }
    Entry *e = &self->entries[self->n_entries++];
    e->key_off = self->keys.len;
    e->key_len = (uint16_t)n;
    e->record = (const Slot *)value; /* resolved after the walk */
    if (buf_put(&self->keys, key, n) < 0) return -2;
    return 0;
}

static int walk_node(CarIndex *self, const unsigned char *cid, int has_layer, int layer,
                     int depth) {
    if (depth >= MAX_DEPTH) return -1;
    Slot *s = verified_block(self, cid);
    if (!s) return -1;
    Reader r = {s->data, 0, (size_t)s->len};
    int major;
    uint64_t n;
    if (read_head(&r, &major, &n) < 0 || major != 5 || n != 2) return -1;
    if (expect_key(&r, 'e') < 0 || read_head(&r, &major, &n) < 0 || major != 4) return -1;
    if (n > (r.end - r.pos) / 8) return -1; /* an entry takes more than 8 bytes: a count
                                               beyond that is a lie (and would overflow) */
    size_t count = (size_t)n;
    unsigned char prev[MAX_RKEY + 320 + 2];
    size_t prev_len = 0;
    /* First pass: parse entries into a small array of (key, value, subtree). */
    typedef struct {
        size_t key_len;
        size_t key_at; /* offset in local key store */
        const unsigned char *value, *subtree;
    } Ent;
    Ent stack_ents[32];
    Ent *ents = count <= 32 ? stack_ents : PyMem_RawMalloc(count * sizeof(Ent));
    Buf local = {0};
    int rc = -1;
    if (!ents) return -2;
    for (size_t i = 0; i < count; i++) {
        uint64_t p, klen;
        if (read_head(&r, &major, &n) < 0 || major != 5 || n != 4) goto done;
        if (expect_key(&r, 'k') < 0 || read_head(&r, &major, &klen) < 0 || major != 2 ||
            klen > r.end - r.pos)
            goto done;
        const unsigned char *suffix = r.p + r.pos;
        r.pos += (size_t)klen;
        if (expect_key(&r, 'p') < 0 || read_head(&r, &major, &p) < 0 || major != 0 ||
            p > prev_len)
            goto done;
        if (p + klen > sizeof(prev)) goto done;
        memcpy(prev + p, suffix, (size_t)klen);
        prev_len = (size_t)(p + klen);
        ents[i].key_len = prev_len;
        ents[i].key_at = local.len;
        if (buf_put(&local, prev, prev_len) < 0) {
            rc = -2;
            goto done;
        }
        if (expect_key(&r, 't') < 0 || read_link_or_null(&r, &ents[i].subtree) < 0) goto done;
        if (expect_key(&r, 'v') < 0 || r.end - r.pos < 2 || r.p[r.pos] != 0xd8 ||
            r.p[r.pos + 1] != 42)
            goto done;
        r.pos += 2;
        if (read_link_after_tag(&r, &ents[i].value) < 0) goto done;
    }
    const unsigned char *left;
    if (expect_key(&r, 'l') < 0 || read_link_or_null(&r, &left) < 0 || r.pos != r.end) goto done;
    if (count) {
        int first = key_layer((const unsigned char *)local.data + ents[0].key_at, ents[0].key_len);
        if (has_layer && first != layer) goto done;
        has_layer = 1;
        layer = first;
    }
    if (left) {
        if (check_child(has_layer, layer) < 0) goto done;
        rc = walk_node(self, left, has_layer, layer - 1, depth + 1);
        if (rc < 0) goto done;
        rc = -1;
    }
    for (size_t i = 0; i < count; i++) {
        const unsigned char *key = (const unsigned char *)local.data + ents[i].key_at;
        if (i && key_layer(key, ents[i].key_len) != layer) goto done;
        int pr = push_entry(self, key, ents[i].key_len, ents[i].value);
        if (pr < 0) {
            rc = pr;
            goto done;
        }
        if (ents[i].subtree) {
            if (check_child(has_layer, layer) < 0) goto done;
            rc = walk_node(self, ents[i].subtree, has_layer, layer - 1, depth + 1);
            if (rc < 0) goto done;
            rc = -1;
        }
    }
    rc = 0;
done:
    if (ents != stack_ents) PyMem_RawFree(ents);
    buf_free(&local);
    return rc;
}

/* ---------------------------------------------------------------- repo paths */

static int rkey_ok(const unsigned char *s, size_t n) {
    if (n == 0 || n > MAX_RKEY) return 0;
    if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '~' || c == '.' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- JSON writing */

static const char B32[] = "abcdefghijklmnopqrstuvwxyz234567";
static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int put_cid_text(Buf *b, const unsigned char *cid) {
    /* multibase base32: 'b' + 36 bytes -> 58 characters, unpadded */
    if (buf_reserve(b, 59) < 0) return -1;
    char *o = b->data + b->len;
    *o++ = 'b';
    uint64_t acc = 0;
    int bits = 0;
    for (int i = 0; i < CID_LEN; i++) {
        acc = (acc << 8) | cid[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            *o++ = B32[(acc >> bits) & 31];
        }
    }
    if (bits) *o++ = B32[(acc << (5 - bits)) & 31];
    b->len = (size_t)(o - b->data);
    return 0;
}

static int put_base64(Buf *b, const unsigned char *s, size_t n) {
    if (buf_reserve(b, (n + 2) / 3 * 4) < 0) return -1;
    char *o = b->data + b->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8) | s[i + 2];
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = B64[(v >> 6) & 63];
        *o++ = B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8);
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = B64[(v >> 6) & 63];
    }
    b->len = (size_t)(o - b->data);
    return 0;
}

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
static int utf8_ok(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            cp = c & 0x07;
        } else
            return 0;
        if (n - i <= need) return 0;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((need == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += need + 1;
    }
    return 1;
}

static const char HEX[] = "0123456789abcdef";

static int put_json_string(Buf *b, const unsigned char *s, size_t n) {
    if (!utf8_ok(s, n)) return -1;
    if (buf_reserve(b, n * 6 + 2) < 0) return -2;
    char *o = b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\t': *o++ = 't'; break;
        case '\n': *o++ = 'n'; break;
        case '\f': *o++ = 'f'; break;
        case '\r': *o++ = 'r'; break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = HEX[c >> 4];
            *o++ = HEX[c & 15];
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    return 0;
}

static int put_u64(Buf *b, uint64_t v, int negative) {
    char tmp[24];
    int i = 24;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (negative) tmp[--i] = '-';
    return buf_put(b, tmp + i, (size_t)(24 - i));
}

typedef struct {
    const unsigned char *created; /* the top-level createdAt text, if any */
    size_t created_len;
} Found;

/* One DAG-CBOR item as JSON; -1 = not for this path, -2 = out of memory. */
static int put_item(Buf *b, Reader *r, int depth, Found *found) {
    int major;
    uint64_t arg;
    if (depth > MAX_JSON_DEPTH) return -1;
    if (r->pos >= r->end) return -1;
    unsigned char ib = r->p[r->pos];
    if (ib >= 0xf4 && ib <= 0xf6) {
        r->pos++;
        return buf_put(b, ib == 0xf4 ? "false" : ib == 0xf5 ? "true" : "null", ib == 0xf5 ? 4 : 5 - (ib == 0xf6)) < 0 ? -2 : 0;
    }
    if (read_head(r, &major, &arg) < 0) return -1;
    switch (major) {
    case 0:
        return put_u64(b, arg, 0) < 0 ? -2 : 0;
    case 1:
        if (arg > (uint64_t)INT64_MAX) return -1;
        return put_u64(b, arg + 1, 1) < 0 ? -2 : 0;
    case 2:
        if (arg > r->end - r->pos) return -1;
        if (buf_put(b, "{\"$bytes\":\"", 11) < 0 || put_base64(b, r->p + r->pos, (size_t)arg) < 0 ||
            buf_put(b, "\"}", 2) < 0)
            return -2;
        r->pos += (size_t)arg;
        return 0;
    case 3: {
        if (arg > r->end - r->pos) return -1;
        int rc = put_json_string(b, r->p + r->pos, (size_t)arg);
        r->pos += (size_t)arg;
        return rc;
    }
    case 4:
        if (buf_byte(b, '[') < 0) return -2;
        for (uint64_t i = 0; i < arg; i++) {
            if (i && buf_byte(b, ',') < 0) return -2;
            int rc = put_item(b, r, depth + 1, NULL);
            if (rc < 0) return rc;
        }
        return buf_byte(b, ']') < 0 ? -2 : 0;
    case 5: {
        if (buf_byte(b, '{') < 0) return -2;
        const unsigned char *prev = NULL;
        size_t prev_len = 0;
        for (uint64_t i = 0; i < arg; i++) {
            const unsigned char *k;
            size_t kn;
            if (read_text(r, &k, &kn) < 0) return -1;
            if (prev) { /* canonical order: shorter first, then bytewise; no repeats */
                if (kn < prev_len) return -1;
                if (kn == prev_len && memcmp(prev, k, kn) >= 0) return -1;
            }
            if (kn && k[0] == '$' && !(kn == 5 && memcmp(k, "$type", 5) == 0)) return -1;
            prev = k;
            prev_len = kn;
            if (i && buf_byte(b, ',') < 0) return -2;
            int rc = put_json_string(b, k, kn);
            if (rc < 0) return rc;
            if (buf_byte(b, ':') < 0) return -2;
            if (found && kn == 9 && memcmp(k, "createdAt", 9) == 0 && r->pos < r->end &&
                (r->p[r->pos] >> 5) == 3) {
                Reader peek = *r;
                const unsigned char *s;
                size_t sn;
                if (read_text(&peek, &s, &sn) == 0) {
                    found->created = s;
                    found->created_len = sn;
                }
            }
            rc = put_item(b, r, depth + 1, NULL);
            if (rc < 0) return rc;
        }
        return buf_byte(b, '}') < 0 ? -2 : 0;
    }
    case 6: {
        const unsigned char *cid;
        if (arg != 42 || read_link_after_tag(r, &cid) < 0) return -1;
        if (buf_put(b, "{\"$link\":\"", 10) < 0 || put_cid_text(b, cid) < 0 || buf_put(b, "\"}", 2) < 0)
            return -2;
        return 0;
    }
    default:
        return -1;
    }
}

/* ---------------------------------------------------------------- createdAt */

static inline int digits(const unsigned char *s, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int64_t days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* An atproto datetime, `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` (syntax.py's rule,
   at most 64 characters), naming a real instant from year 1: 1, parsed into *us (UTC; the
   fraction truncated to microseconds, as datetime.fromisoformat does); -1 otherwise, also
   for anything unusual (an impossible date, year 1 with an offset): left to the Python
   rule, syntax.parse_datetime, which decides. */
static int atproto_datetime(const unsigned char *s, size_t n, int64_t *us) {
    if (n < 20 || n > 64 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
        s[16] != ':')
        return -1;
    int y, mo, d, h, mi, se, oh = 0, om = 0, sign = 0;
    if (digits(s, 4, &y) || digits(s + 5, 2, &mo) || digits(s + 8, 2, &d) ||
        digits(s + 11, 2, &h) || digits(s + 14, 2, &mi) || digits(s + 17, 2, &se))
        return -1;
    size_t i = 19;
    int64_t micros = 0;
    if (s[i] == '.') {
        size_t first = ++i;
        int scale = 100000;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            micros += (s[i] - '0') * scale;
            scale /= 10;
            i++;
        }
        if (i == first) return -1;
    }
    if (i + 1 == n && s[i] == 'Z') {
        /* UTC */
    } else if (i + 6 == n && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        if (digits(s + i + 1, 2, &oh) || digits(s + i + 4, 2, &om)) return -1;
        sign = s[i] == '+' ? 1 : -1;
        if (oh > 23 || om > 59 || (sign < 0 && oh == 0 && om == 0) || y == 1) return -1;
    } else
        return -1;
    static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 59) return -1;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > dim[mo - 1] + (mo == 2 && leap)) return -1;
    int64_t seconds = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
    seconds -= (int64_t)sign * (oh * 3600 + om * 60);
    *us = seconds * 1000000 + micros;
    return 1;
}

/* ---------------------------------------------------------------- the type */

static void CarIndex_dealloc(CarIndex *self) {
    PyMem_RawFree(self->slots);
    PyMem_RawFree(self->entries);
    buf_free(&self->keys);
    if (self->car) PyBuffer_Release(&self->view);
    Py_XDECREF(self->car);
    Py_XDECREF(self->counts);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A CAR this big is indexed without the GIL (a repo). A stream's slice (a few KB) is
   indexed in under a microsecond: releasing the GIL for it let another thread in (the
   sink's writer, a pipe's reader), and the stream waited for it to give it back. */
#define RELEASE_GIL_BYTES (256 * 1024)

static int CarIndex_init(CarIndex *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"car", "drop_pages", NULL};
    PyObject *car;
    int drop_pages = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$p", kwlist, &car, &drop_pages)) return -1;
    if (self->car) {
        PyErr_SetString(PyExc_TypeError, "CarIndex is initialised once");
        return -1;
    }
    if (drop_pages && strcmp(Py_TYPE(car)->tp_name, "mmap.mmap") != 0) {
        PyErr_SetString(PyExc_TypeError, "drop_pages needs an mmap (of a file, read-only)");
        return -1;
    }
    if (PyObject_GetBuffer(car, &self->view, PyBUF_SIMPLE) < 0) return -1;
    self->drop_pages = drop_pages;
    self->car = Py_NewRef(car);
    self->base = (const unsigned char *)self->view.buf;
    self->size = self->view.len;
    int rc;
    if (self->size >= RELEASE_GIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        rc = index_car(self);
        Py_END_ALLOW_THREADS
    } else {
        rc = index_car(self);
    }
    if (rc == -2) {
        PyErr_NoMemory();
        return -1;
    }
    if (rc == -1) {
        PyErr_SetString(PyExc_ValueError, "not a plain CAR v1 of dag-cbor sha-256 blocks");
        return -1;
    }
    return 0;
}

static PyObject *CarIndex_root(CarIndex *self, void *closure) {
    return PyBytes_FromStringAndSize((const char *)self->root, CID_LEN);
}

static PyObject *CarIndex_block(CarIndex *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) return PyErr_Format(PyExc_TypeError, "cid must be bytes");
    if (PyBytes_GET_SIZE(arg) != CID_LEN) Py_RETURN_NONE;
    Slot *s = verified_block(self, (const unsigned char *)PyBytes_AS_STRING(arg));
    if (!s) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)s->data, s->len);
}

/* Call `fn(text)`; 1 true, 0 false, -2 error. */
static int call_bool(PyObject *fn, PyObject *text) {
    PyObject *res = PyObject_CallOneArg(fn, text);
    if (!res) return -2;
    int truth = PyObject_IsTrue(res);
    Py_DECREF(res);
    return truth < 0 ? -2 : truth;
}

/* Every entry's path and record block, without the GIL: the rkey's syntax, an ASCII
   collection, the record block present, matching its CID and not over `max_record`. */
static int check_entries(CarIndex *self, Py_ssize_t max_record) {
    for (size_t i = 0; i < self->n_entries; i++) {
        Entry *e = &self->entries[i];
        const unsigned char *key = (const unsigned char *)self->keys.data + e->key_off;
        const unsigned char *slash = memchr(key, '/', e->key_len);
        if (!slash) return -1;
        size_t cn = (size_t)(slash - key);
        if (!rkey_ok(slash + 1, e->key_len - cn - 1)) return -1;
        for (size_t k = 0; k < cn; k++)
            if (key[k] >= 0x80) return -1;
        Slot *block = verified_block(self, (const unsigned char *)e->record);
        if (!block || block->len > max_record) return -1;
        e->record = block;
        e->coll_len = (uint16_t)cn;
    }
    return 0;
}

/* walk(data_root, nsid_ok, keep, max_record) -> kept count, or -1 (leave it to Python).
   The MST walk and the record checks run without the GIL; each collection (its records
   are contiguous in key order) is then checked with `nsid_ok` and filtered with `keep`. */
static PyObject *CarIndex_walk(CarIndex *self, PyObject *args) {
    Py_buffer root;
    PyObject *nsid_ok, *keep;
    Py_ssize_t max_record;
    if (!PyArg_ParseTuple(args, "y*OOn", &root, &nsid_ok, &keep, &max_record)) return NULL;
    self->n_entries = 0;
    self->keys.len = 0;
    int rc = -1;
    if (root.len == CID_LEN) {
        Py_BEGIN_ALLOW_THREADS
        rc = walk_node(self, root.buf, 0, 0, 0);
        if (rc == 0) rc = check_entries(self, max_record);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&root);
    if (rc == -2) return PyErr_NoMemory();
    if (rc < 0) return PyLong_FromLong(-1);
    PyObject *counts = PyDict_New();
    if (!counts) return NULL;
    Py_XSETREF(self->counts, counts);
    size_t kept = 0, i = 0;
    while (i < self->n_entries) { /* one run of a collection (contiguous in key order) */
        Entry first = self->entries[i];
        const unsigned char *key = (const unsigned char *)self->keys.data + first.key_off;
        size_t cn = first.coll_len, end = i + 1;
        while (end < self->n_entries && self->entries[end].coll_len == cn &&
               memcmp(self->keys.data + self->entries[end].key_off, key, cn) == 0)
            end++;
        PyObject *text = PyUnicode_DecodeASCII((const char *)key, (Py_ssize_t)cn, NULL);
        if (!text) return NULL;
        int ok = call_bool(nsid_ok, text), keep_run = 1;
        if (ok == 1 && keep != Py_None) keep_run = call_bool(keep, text);
        if (ok == 1 && keep_run == 1) {
            PyObject *n = PyLong_FromSize_t(end - i);
            if (!n || PyDict_SetItem(counts, text, n) < 0) ok = -2;
            Py_XDECREF(n);
            memmove(&self->entries[kept], &self->entries[i], (end - i) * sizeof(Entry));
            kept += end - i;
        }
        Py_DECREF(text);
        if (ok == -2 || keep_run == -2) return NULL;
        if (ok == 0) return PyLong_FromLong(-1);
        i = end;
    }
    self->n_entries = kept;
    return PyLong_FromSize_t(kept);
}

typedef struct {
    Buf data;
    Buf offsets; /* int32 */
} Column;

static int col_start(Column *c) {
    int32_t zero = 0;
    return buf_put(&c->offsets, &zero, 4);
}

static int col_end(Column *c) {
    if (c->data.len > INT32_MAX) return -1;
    int32_t off = (int32_t)c->data.len;
    return buf_put(&c->offsets, &off, 4);
}

static PyObject *col_bytes(Buf *b) {
    return PyBytes_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->len);
}

typedef struct {
    size_t index;
    const unsigned char *text;
    size_t len;
} Odd; /* a createdAt of another form, for the Python rule */

typedef struct {
    Column coll, rkey, uri, cid, json;
    Buf created, valid, odd; /* int64 us; validity bitmap; Odd entries */
    Py_ssize_t done, nulls;
} Filled;

static void filled_free(Filled *f) {
    Column *cols[] = {&f->coll, &f->rkey, &f->uri, &f->cid, &f->json};
    for (int k = 0; k < 5; k++) {
        buf_free(&cols[k]->data);
        buf_free(&cols[k]->offsets);
    }
    buf_free(&f->created);
    buf_free(&f->valid);
    buf_free(&f->odd);
}

/* Records [start, stop) into `f`, without the GIL: 0, or -1 (a record to leave to the
   Python path), -2 (out of memory). Stops early once the JSON exceeds max_bytes. */
static int fill_columns(CarIndex *self, Py_ssize_t start, Py_ssize_t stop,
                        const unsigned char *prefix, size_t prefix_len, Py_ssize_t max_bytes,
                        Filled *f) {
    size_t bitmap = (size_t)(stop - start + 7) / 8;
    if (col_start(&f->coll) || col_start(&f->rkey) || col_start(&f->uri) || col_start(&f->cid) ||
        col_start(&f->json) || buf_reserve(&f->valid, bitmap) < 0 ||
        buf_reserve(&f->created, (size_t)(stop - start) * 8) < 0)
        return -2;
    memset(f->valid.data, 0, bitmap);
    f->valid.len = bitmap;
    Py_ssize_t i;
    for (i = start; i < stop; i++) {
        Entry *e = &self->entries[i];
        const unsigned char *key = (const unsigned char *)self->keys.data + e->key_off;
        size_t cn = e->coll_len, rn = e->key_len - cn - 1;
        Found found = {NULL, 0};
        Reader r = {e->record->data, 0, (size_t)e->record->len};
        if (r.end == 0 || (r.p[0] >> 5) != 5) return -1;
        int rc = put_item(&f->json.data, &r, 0, &found);
        if (rc < 0) return rc;
        if (r.pos != r.end) return -1;
        if (col_end(&f->json) || buf_put(&f->coll.data, key, cn) || col_end(&f->coll) ||
            buf_put(&f->rkey.data, key + cn + 1, rn) || col_end(&f->rkey) ||
            buf_put(&f->uri.data, prefix, prefix_len) ||
            buf_put(&f->uri.data, key, e->key_len) || col_end(&f->uri) ||
            put_cid_text(&f->cid.data, e->record->cid) || col_end(&f->cid))
            return -2;
        int64_t us = 0;
        int kind = found.created ? atproto_datetime(found.created, found.created_len, &us) : 0;
        size_t j = (size_t)(i - start);
        if (kind == 1) {
            f->valid.data[j / 8] |= (char)(1 << (j % 8));
        } else {
            f->nulls++;
            if (kind == -1) {
                Odd odd = {j, found.created, found.created_len};
                if (buf_put(&f->odd, &odd, sizeof odd) < 0) return -2;
            }
        }
        if (buf_put(&f->created, &us, 8) < 0) return -2;
        if ((Py_ssize_t)f->json.data.len > max_bytes) {
            i++;
            break;
        }
    }
    f->done = i - start;
    return 0;
}

static PyObject *odd_list(Filled *f) {
    size_t n = f->odd.len / sizeof(Odd);
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list) return NULL;
    for (size_t k = 0; k < n; k++) {
        Odd *odd = (Odd *)f->odd.data + k;
        PyObject *item = Py_BuildValue("(ns#)", (Py_ssize_t)odd->index, (const char *)odd->text,
                                       (Py_ssize_t)odd->len);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)k, item);
    }
    return list;
}

/* columns(start, stop, uri_prefix, max_bytes) -> tuple | None */
static PyObject *CarIndex_columns(CarIndex *self, PyObject *args) {
    Py_ssize_t start, stop, max_bytes;
    Py_buffer prefix;
    if (!PyArg_ParseTuple(args, "nny*n", &start, &stop, &prefix, &max_bytes)) return NULL;
    if (start < 0 || stop > (Py_ssize_t)self->n_entries || start > stop) {
        PyBuffer_Release(&prefix);
        return PyErr_Format(PyExc_IndexError, "records %zd..%zd out of range", start, stop);
    }
    Filled f;
    memset(&f, 0, sizeof f);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fill_columns(self, start, stop, prefix.buf, (size_t)prefix.len, max_bytes, &f);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&prefix);
    PyObject *result = NULL;
    if (rc == -2) {
        PyErr_NoMemory();
    } else if (rc == -1) {
        result = Py_NewRef(Py_None);
    } else {
        result = Py_BuildValue(
            "(nNNNNNNNNNNNNnN)", f.done, col_bytes(&f.coll.offsets), col_bytes(&f.coll.data),
            col_bytes(&f.rkey.offsets), col_bytes(&f.rkey.data), col_bytes(&f.uri.offsets),
            col_bytes(&f.uri.data), col_bytes(&f.cid.offsets), col_bytes(&f.cid.data),
            col_bytes(&f.json.offsets), col_bytes(&f.json.data), col_bytes(&f.created),
            col_bytes(&f.valid), f.nulls, odd_list(&f));
    }
    filled_free(&f);
    return result;
}

static PyObject *CarIndex_counts(CarIndex *self, PyObject *unused) {
    if (!self->counts) return PyDict_New();
    return Py_NewRef(self->counts);
}

#include "_fastrepo_slice.h"

static PyMethodDef CarIndex_methods[] = {
    {"counts", (PyCFunction)CarIndex_counts, METH_NOARGS, "Kept records by collection."},
    {"check_all", (PyCFunction)CarIndex_check_all, METH_NOARGS, "Every block matches its CID."},
    {"record", (PyCFunction)CarIndex_record, METH_VARARGS, "A record block as atproto JSON."},
    {"invert", (PyCFunction)CarIndex_invert, METH_VARARGS, "The MST root before the ops."},
    {"block", (PyCFunction)CarIndex_block, METH_O, "The block of a CID, checked; None if not."},
    {"walk", (PyCFunction)CarIndex_walk, METH_VARARGS, "Walk and verify the MST."},
    {"columns", (PyCFunction)CarIndex_columns, METH_VARARGS, "Records as Arrow buffers."},
    {NULL},
};

static PyGetSetDef CarIndex_getset[] = {
    {"root", (getter)CarIndex_root, NULL, "The CAR's root CID.", NULL},
    {NULL},
};

static PyTypeObject CarIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "skyfill.atproto._fastrepo.CarIndex",
    .tp_basicsize = sizeof(CarIndex),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)CarIndex_init,
    .tp_dealloc = (destructor)CarIndex_dealloc,
    .tp_methods = CarIndex_methods,
    .tp_getset = CarIndex_getset,
    .tp_doc = "The blocks of one repo CAR, indexed by CID.",
};

/* ---------------------------------------------------------------- stream frame hints */

/* Skip one value of the kinds DAG-CBOR frames hold (ints, strings, arrays, maps, links,
   true/false/null); -1 for anything else (floats, other tags, non-minimal heads, running
   out of data): the caller then leaves the frame to libipld. */
static int skip_value(Reader *r, int depth) {
    int major;
    uint64_t arg;
    if (depth > 64 || read_head(r, &major, &arg) < 0) return -1;
    switch (major) {
    case 0:
    case 1:
        return 0;
    case 2:
    case 3:
        if (arg > r->end - r->pos) return -1;
        r->pos += (size_t)arg;
        return 0;
    case 4:
        for (uint64_t i = 0; i < arg; i++)
            if (skip_value(r, depth + 1) < 0) return -1;
        return 0;
    case 5:
        for (uint64_t i = 0; i < arg; i++)
            if (skip_value(r, depth + 1) < 0 || skip_value(r, depth + 1) < 0) return -1;
        return 0;
    case 6:
        return arg == 42 ? skip_value(r, depth + 1) : -1;
    case 7:
        return arg >= 20 && arg <= 22 ? 0 : -1; /* false, true, null */
    }
    return -1;
}

static int is_key(const unsigned char *k, size_t n, const char *name) {
    size_t len = strlen(name);
    return n == len && memcmp(k, name, len) == 0;
}

/* A map entry's value when it is text: *s, *n; *s = NULL (and the value skipped) when it is
   of another type. */
static int text_or_skip(Reader *r, const unsigned char **s, size_t *n) {
    if (r->pos < r->end && (r->p[r->pos] >> 5) == 3) return read_text(r, s, n);
    *s = NULL;
    return skip_value(r, 0);
}

static PyObject *text_or_none(const unsigned char *s, size_t n, int *bad) {
    if (s == NULL) Py_RETURN_NONE;
    PyObject *text = PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n, NULL);
    if (text == NULL) {
        PyErr_Clear();
        *bad = 1;
    }
    return text;
}

/* peek(message): (type, seq, did) of an event frame as stream/frames.py's peek reads them
   (None where absent or of another type; the body's `repo`, else its `did`), without
   building the body; None when the frame is not two maps of plain values, which the caller
   then reads with libipld. Hints only: what else the frame holds is not checked here. */
static PyObject *peek_frame(PyObject *self, PyObject *message) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(message, &view, PyBUF_SIMPLE) < 0) { /* not bytes: libipld says */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Reader r = {view.buf, 0, (size_t)view.len};
    const unsigned char *kind = NULL, *repo = NULL, *did = NULL, *k;
    size_t kind_n = 0, repo_n = 0, did_n = 0, kn;
    int seen_t = 0, seen_seq = 0, seen_repo = 0, seen_did = 0, seq_major = -1;
    uint64_t n, seq = 0;
    int major;
    PyObject *result = NULL;
    if (read_head(&r, &major, &n) < 0 || major != 5) goto declined;
    for (uint64_t i = 0; i < n; i++) {
        if (read_text(&r, &k, &kn) < 0) goto declined;
        if (is_key(k, kn, "t")) {
            if (seen_t++ || text_or_skip(&r, &kind, &kind_n) < 0) goto declined;
        } else if (skip_value(&r, 0) < 0) {
            goto declined;
        }
    }
    if (read_head(&r, &major, &n) < 0 || major != 5) goto declined;
    for (uint64_t i = 0; i < n; i++) {
        if (read_text(&r, &k, &kn) < 0) goto declined;
        if (is_key(k, kn, "seq")) {
            if (seen_seq++ || r.pos >= r.end) goto declined;
            int m = r.p[r.pos] >> 5;
            if (m == 0 || m == 1) {
                if (read_head(&r, &seq_major, &seq) < 0) goto declined;
            } else if (skip_value(&r, 0) < 0) {
                goto declined;
            }
        } else if (is_key(k, kn, "repo")) {
            if (seen_repo++ || text_or_skip(&r, &repo, &repo_n) < 0) goto declined;
        } else if (is_key(k, kn, "did")) {
            if (seen_did++ || text_or_skip(&r, &did, &did_n) < 0) goto declined;
        } else if (skip_value(&r, 0) < 0) {
            goto declined;
        }
    }
    if (r.pos != r.end) goto declined; /* more than two values: libipld's verdict */
    int bad = 0;
    PyObject *t = text_or_none(kind, kind_n, &bad);
    PyObject *s;
    if (seq_major == 0)
        s = PyLong_FromUnsignedLongLong(seq);
    else if (seq_major == 1)
        s = seq > (uint64_t)INT64_MAX ? NULL : PyLong_FromLongLong(-1 - (long long)seq);
    else
        s = (Py_INCREF(Py_None), Py_None);
    PyObject *d = seen_repo ? text_or_none(repo, repo_n, &bad) : text_or_none(did, did_n, &bad);
    if (t && s && d && !bad) result = PyTuple_Pack(3, t, s, d);
    Py_XDECREF(t);
    Py_XDECREF(s);
    Py_XDECREF(d);
    if (result == NULL) {
        PyErr_Clear();
        goto declined;
    }
    PyBuffer_Release(&view);
    return result;
declined:
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

#include "_fastrepo_event.h"

static PyMethodDef fastrepo_functions[] = {
    {"peek_frame", (PyCFunction)peek_frame, METH_O, "An event frame's type, seq and DID."},
    {"commit_event", (PyCFunction)(void (*)(void))commit_event, METH_FASTCALL,
     "A #commit event read and its slice checked."},
    {"bind_commit_types", (PyCFunction)bind_commit_types, METH_VARARGS,
     "The classes commit_event makes its result of."},
    {NULL},
};

static struct PyModuleDef fastrepo_module = {
    PyModuleDef_HEAD_INIT, "_fastrepo", "The repo decoder's hot path in C.", -1,
    fastrepo_functions,
};

PyMODINIT_FUNC PyInit__fastrepo(void) {
    if (PyType_Ready(&CarIndexType) < 0) return NULL;
    PyDateTime_IMPORT;
    if (!PyDateTimeAPI) return NULL;
    static const char *actions[3] = {"create", "update", "delete"};
    for (int i = 0; i < 3; i++)
        if (!ACTION_TEXT[i] && !(ACTION_TEXT[i] = PyUnicode_InternFromString(actions[i])))
            return NULL;
    PyObject *m = PyModule_Create(&fastrepo_module);
    if (!m) return NULL;
    Py_INCREF(&CarIndexType);
    if (PyModule_AddObject(m, "CarIndex", (PyObject *)&CarIndexType) < 0) {
        Py_DECREF(&CarIndexType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "RELEASE_GIL_BYTES", RELEASE_GIL_BYTES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
