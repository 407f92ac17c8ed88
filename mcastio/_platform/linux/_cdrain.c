/* The compiled receive drain: recvmmsg, control messages and Datagram values in C.
 *
 * Optional: mcastio/_drain.py picks this module where it was built, the pure path
 * (mcastio/_receive.py with mcastio/_platform/linux/mmsg.py) otherwise; tests/test_drain_paths.py
 * checks both give identical values and counts. Drain owns the buffers of BATCH
 * messages (payload slots in one anonymous mapping: untouched pages cost no memory)
 * and a cache of (source address, destination, interface, TTL) -> their Python
 * objects (source tuple, group, interface name), so a flood from one sender builds
 * them once and the group check against any number of groups is one dict lookup per
 * distinct arrival. A Datagram is built by
 * writing its slots directly, as the pure path's slot descriptors do. The batched
 * send (sendmmsg, UDP GSO) is in _csend.c.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "_cdrain.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#define BATCH 32
#define SLOT 65536 /* largest UDP payload + 1: MSG_TRUNC tells oversize apart */
#define CONTROL_ROOM 256
#define CACHE 64

#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif

typedef struct {
    int used;
    socklen_t namelen;
    unsigned char name[sizeof(struct sockaddr_in6)];
    unsigned char dest[16];
    int ifindex;
    int ttl;   /* -1: none */
    int reply; /* replies and group traffic resolve names differently */
    PyObject *source;
    PyObject *interface;
    PyObject *group; /* NULL: not sent to any group in groups (source, interface NULL) */
} CacheEntry;

typedef struct {
    PyObject_HEAD
    int family;
    PyTypeObject *dgram_type;
    PyObject *index_to_name; /* callable(int) -> str, for indexes not in names */
    PyObject *names;         /* dict int -> str */
    PyObject *groups;        /* dict packed address (bytes) -> group (str) */
    Py_ssize_t off_data, off_source, off_group, off_interface, off_ttl;
    int gc_new; /* the five slots are all the value holds: skip tp_alloc's zeroing */
    char *payload;
    size_t payload_size;
    size_t slot;
    struct mmsghdr hdrs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in6 addrs[BATCH];
    /* Aligned like a cmsghdr, as CMSG_FIRSTHDR expects. */
    union {
        struct cmsghdr align;
        char buf[CONTROL_ROOM];
    } control[BATCH];
    CacheEntry cache[CACHE];
} Drain;

static void
cache_clear(Drain *self)
{
    for (int i = 0; i < CACHE; i++) {
        Py_CLEAR(self->cache[i].source);
        Py_CLEAR(self->cache[i].interface);
        Py_CLEAR(self->cache[i].group);
        self->cache[i].used = 0;
    }
}

static int
slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *offset)
{
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name); /* borrowed */
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    *offset = member->offset;
    return 0;
}

static int
Drain_init(Drain *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"family", "datagram_type", "index_to_name", "slot", NULL};
    int family;
    Py_ssize_t slot = SLOT;
    PyObject *type, *index_to_name;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO!O|n", kwlist, &family, &PyType_Type, &type,
                                     &index_to_name, &slot))
        return -1;
    if (slot < 1 || slot > SLOT) {
        PyErr_SetString(PyExc_ValueError, "slot must be from 1 to 65536");
        return -1;
    }
    if (family != AF_INET && family != AF_INET6) {
        PyErr_SetString(PyExc_ValueError, "family must be AF_INET or AF_INET6");
        return -1;
    }
    if (self->payload != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Drain is already initialised");
        return -1;
    }
    PyTypeObject *t = (PyTypeObject *)type;
    if (slot_offset(t, "data", &self->off_data) < 0 ||
        slot_offset(t, "source", &self->off_source) < 0 ||
        slot_offset(t, "group", &self->off_group) < 0 ||
        slot_offset(t, "interface", &self->off_interface) < 0 ||
        slot_offset(t, "ttl", &self->off_ttl) < 0)
        return -1;
    /* PyObject_GC_New leaves the memory as malloc gave it: only for a type whose
     * five slots are its whole body (no __dict__, __weakref__ or other slot), as
     * Datagram is; any other type goes through tp_alloc. */
    self->gc_new = PyType_IS_GC(t) && t->tp_alloc == PyType_GenericAlloc &&
                   t->tp_itemsize == 0 && t->tp_dictoffset == 0 && t->tp_weaklistoffset == 0 &&
                   t->tp_basicsize == (Py_ssize_t)(sizeof(PyObject) + 5 * sizeof(PyObject *));
    self->family = family;
    Py_INCREF(type);
    self->dgram_type = t;
    Py_INCREF(index_to_name);
    self->index_to_name = index_to_name;
    self->names = PyDict_New();
    self->groups = PyDict_New();
    if (self->names == NULL || self->groups == NULL)
        return -1;
    self->slot = (size_t)slot;
    self->payload_size = (size_t)BATCH * self->slot;
    /* Private and anonymous: pages the kernel never writes to are never resident,
     * and a forked child never reads into its parent's buffers. */
    void *mem = mmap(NULL, self->payload_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->payload = mem;
    for (int i = 0; i < BATCH; i++) {
        self->iov[i].iov_base = self->payload + (size_t)i * self->slot;
        self->iov[i].iov_len = self->slot;
        struct msghdr *h = &self->hdrs[i].msg_hdr;
        h->msg_name = &self->addrs[i];
        h->msg_iov = &self->iov[i];
        h->msg_iovlen = 1;
        h->msg_control = self->control[i].buf;
    }
    return 0;
}

static int
Drain_traverse(Drain *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dgram_type);
    Py_VISIT(self->index_to_name);
    Py_VISIT(self->names);
    Py_VISIT(self->groups);
    for (int i = 0; i < CACHE; i++) {
        Py_VISIT(self->cache[i].source);
        Py_VISIT(self->cache[i].interface);
        Py_VISIT(self->cache[i].group);
    }
    return 0;
}

static int
Drain_clear(Drain *self)
{
    Py_CLEAR(self->dgram_type);
    Py_CLEAR(self->index_to_name);
    Py_CLEAR(self->names);
    Py_CLEAR(self->groups);
    cache_clear(self);
    return 0;
}

static void
Drain_dealloc(Drain *self)
{
    PyObject_GC_UnTrack(self);
    Drain_clear(self);
    if (self->payload != NULL)
        munmap(self->payload, self->payload_size);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Drain_set_names(Drain *self, PyObject *names)
{
    if (!PyDict_Check(names)) {
        PyErr_SetString(PyExc_TypeError, "names must be a dict");
        return NULL;
    }
    Py_INCREF(names);
    Py_SETREF(self->names, names);
    /* Names are remembered with each arrival: forget them all. */
    cache_clear(self);
    Py_RETURN_NONE;
}

static PyObject *
Drain_set_groups(Drain *self, PyObject *groups)
{
    if (!PyDict_Check(groups)) {
        PyErr_SetString(PyExc_TypeError, "groups must be a dict");
        return NULL;
    }
    Py_INCREF(groups);
    Py_SETREF(self->groups, groups);
    /* What each arrival means depends on the groups: a group just removed must
     * never be delivered from a remembered arrival. */
    cache_clear(self);
    Py_RETURN_NONE;
}

static PyObject *
make_source(Drain *self, const unsigned char *name)
{
    char host[INET6_ADDRSTRLEN];
    if (self->family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)name;
        if (inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", host, (int)ntohs(sin->sin_port));
    }
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)name;
    if (inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host) == NULL)
        return PyErr_SetFromErrno(PyExc_OSError);
    return Py_BuildValue("(siII)", host, (int)ntohs(sin6->sin6_port),
                         (unsigned int)ntohl(sin6->sin6_flowinfo),
                         (unsigned int)sin6->sin6_scope_id);
}

/* The interface name for an index: from names, else (group traffic only) from
 * index_to_name; NULL without an error set when a reply came from elsewhere. */
static PyObject *
interface_name(Drain *self, int ifindex, int reply)
{
    PyObject *key = PyLong_FromLong(ifindex);
    if (key == NULL)
        return NULL;
    PyObject *name = PyDict_GetItemWithError(self->names, key); /* borrowed */
    /* Group traffic takes names.get(i) or index_to_name(i); a reply needs names[i]. */
    if (name != NULL && (reply || PyObject_IsTrue(name))) {
        Py_DECREF(key);
        Py_INCREF(name);
        return name;
    }
    if (PyErr_Occurred() || reply) {
        Py_DECREF(key);
        return NULL;
    }
    name = PyObject_CallOneArg(self->index_to_name, key);
    Py_DECREF(key);
    return name;
}

/* The cached (source, group, interface) of one arrival; a new entry on a miss. An
 * entry whose group is NULL was sent to no group in groups; one not used came from
 * an interface not in use (a reply). dest is the pktinfo destination (zeros for a
 * reply, which goes by its interface only). */
static CacheEntry *
lookup(Drain *self, const unsigned char *name, socklen_t namelen, const unsigned char *dest,
       int ifindex, int ttl, int reply)
{
    if (namelen > sizeof(struct sockaddr_in6))
        namelen = sizeof(struct sockaddr_in6);
    size_t dest_len = self->family == AF_INET ? 4 : 16;
    unsigned long h = (unsigned long)ifindex * 31u + (unsigned long)(ttl + 1) * 7u + reply;
    for (socklen_t i = 0; i < namelen; i++)
        h = h * 131u + name[i];
    for (size_t i = 0; i < dest_len; i++)
        h = h * 131u + dest[i];
    CacheEntry *e = &self->cache[h % CACHE];
    if (e->used && e->namelen == namelen && e->ifindex == ifindex && e->ttl == ttl &&
        e->reply == reply && memcmp(e->name, name, namelen) == 0 &&
        memcmp(e->dest, dest, dest_len) == 0)
        return e;
    PyObject *group = Py_None, *iface = NULL, *source = NULL;
    if (!reply) {
        PyObject *key = PyBytes_FromStringAndSize((const char *)dest, (Py_ssize_t)dest_len);
        if (key == NULL)
            return NULL;
        group = PyDict_GetItemWithError(self->groups, key); /* borrowed */
        Py_DECREF(key);
        if (group == NULL && PyErr_Occurred())
            return NULL;
    }
    if (group != NULL) {
        /* Owned from here: interface_name may call Python, which may drop the
           dict's reference to a borrowed group. */
        Py_INCREF(group);
        iface = interface_name(self, ifindex, reply);
        if (iface == NULL) {
            Py_DECREF(group);
            if (PyErr_Occurred())
                return NULL;
            static CacheEntry none = {0};
            return &none; /* a reply from an interface not in use */
        }
        source = make_source(self, name);
        if (source == NULL) {
            Py_DECREF(iface);
            Py_DECREF(group);
            return NULL;
        }
    }
    Py_XSETREF(e->source, source);
    Py_XSETREF(e->interface, iface);
    Py_XSETREF(e->group, group);
    e->used = 1;
    e->namelen = namelen;
    memcpy(e->name, name, namelen);
    memcpy(e->dest, dest, dest_len);
    e->ifindex = ifindex;
    e->ttl = ttl;
    e->reply = reply;
    return e;
}

static PyObject *
new_datagram(Drain *self, PyObject *data, PyObject *source, PyObject *group, PyObject *iface,
             PyObject *ttl)
{
    PyObject *d;
    if (self->gc_new) {
        /* Not zeroed and not tracked yet: every slot is written below, then it is
         * tracked, as tp_alloc would have done (12-22 ns less per datagram). */
        d = (PyObject *)PyObject_GC_New(PyObject, self->dgram_type);
    } else {
        d = self->dgram_type->tp_alloc(self->dgram_type, 0);
    }
    if (d == NULL)
        return NULL;
    char *base = (char *)d;
    Py_INCREF(data);
    *(PyObject **)(base + self->off_data) = data;
    Py_INCREF(source);
    *(PyObject **)(base + self->off_source) = source;
    Py_INCREF(group);
    *(PyObject **)(base + self->off_group) = group;
    Py_INCREF(iface);
    *(PyObject **)(base + self->off_interface) = iface;
    Py_INCREF(ttl);
    *(PyObject **)(base + self->off_ttl) = ttl;
    if (self->gc_new)
        PyObject_GC_Track(d);
    return d;
}

/* read(fd, reply, budget) -> (datagrams, read, truncated, not_for_group, drops, errno)
 *
 * Group traffic (reply false) is delivered when its destination is in groups, with
 * that group in Datagram.group; replies (reply true) when they arrived on an
 * interface in names, with group None. drops is the largest SO_RXQ_OVFL count
 * seen (-1: none); errno is what ended the reads early (0: the socket was empty
 * or the budget spent), so the datagrams already read are never lost. */
static PyObject *
Drain_read(Drain *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "read(fd, reply, budget)");
        return NULL;
    }
    if (self->payload == NULL || self->names == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Drain.__init__ was not called");
        return NULL;
    }
    int fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    int reply = PyObject_IsTrue(args[1]);
    if (reply < 0)
        return NULL;
    Py_ssize_t budget = PyLong_AsSsize_t(args[2]);
    if (budget == -1 && PyErr_Occurred())
        return NULL;
    PyObject *batch = PyList_New(0);
    if (batch == NULL)
        return NULL;
    socklen_t name_size =
        self->family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    Py_ssize_t read = 0, truncated = 0, not_for_group = 0;
    long long drops = -1;
    int err = 0;
    while (read < budget) {
        for (int i = 0; i < BATCH; i++) {
            /* The kernel overwrites these lengths and flags on every call. */
            struct msghdr *h = &self->hdrs[i].msg_hdr;
            h->msg_namelen = name_size;
            h->msg_controllen = CONTROL_ROOM;
            h->msg_flags = 0;
        }
        int count = recvmmsg(fd, self->hdrs, BATCH, MSG_DONTWAIT, NULL);
        if (count < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                err = errno;
            break;
        }
        read += count;
        for (int i = 0; i < count; i++) {
            struct msghdr *h = &self->hdrs[i].msg_hdr;
            if (h->msg_flags & MSG_TRUNC) {
                truncated++;
                continue;
            }
            int ifindex = -1, ttl = -1, has_dest = 0;
            unsigned char dest[16] = {0};
            const char *end = (const char *)h->msg_control + h->msg_controllen;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
                /* A truncated message (MSG_CTRUNC): nothing from here on is whole. */
                if (c->cmsg_len < CMSG_LEN(0) || (const char *)c + c->cmsg_len > end)
                    break;
                size_t size = c->cmsg_len - CMSG_LEN(0);
                const unsigned char *data = CMSG_DATA(c);
                if (c->cmsg_level == IPPROTO_IP) {
                    if (c->cmsg_type == IP_PKTINFO && size >= sizeof(struct in_pktinfo)) {
                        struct in_pktinfo info;
                        memcpy(&info, data, sizeof info);
                        ifindex = info.ipi_ifindex;
                        if (!reply && self->family == AF_INET) {
                            memcpy(dest, &info.ipi_addr, 4);
                            has_dest = 1;
                        }
                    } else if (c->cmsg_type == IP_TTL && size >= sizeof(int)) {
                        memcpy(&ttl, data, sizeof(int));
                    }
                } else if (c->cmsg_level == IPPROTO_IPV6) {
                    if (c->cmsg_type == IPV6_PKTINFO && size >= sizeof(struct in6_pktinfo)) {
                        struct in6_pktinfo info;
                        memcpy(&info, data, sizeof info);
                        ifindex = (int)info.ipi6_ifindex;
                        if (!reply && self->family == AF_INET6) {
                            memcpy(dest, &info.ipi6_addr, 16);
                            has_dest = 1;
                        }
                    } else if (c->cmsg_type == IPV6_HOPLIMIT && size >= sizeof(int)) {
                        memcpy(&ttl, data, sizeof(int));
                    }
                } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL &&
                           size >= 4) {
                    uint32_t count32;
                    memcpy(&count32, data, 4);
                    if ((long long)count32 > drops)
                        drops = count32;
                }
            }
            if (!reply && !has_dest) {
                not_for_group++;
                continue;
            }
            if (reply)
                ttl = -1; /* replies carry no TTL, whatever the socket asked for */
            CacheEntry *e = lookup(self, (const unsigned char *)h->msg_name, h->msg_namelen,
                                   dest, ifindex, ttl, reply);
            if (e == NULL)
                goto fail;
            if (!e->used || e->group == NULL) {
                not_for_group++;
                continue;
            }
            PyObject *data = PyBytes_FromStringAndSize(self->iov[i].iov_base,
                                                       (Py_ssize_t)self->hdrs[i].msg_len);
            if (data == NULL)
                goto fail;
            PyObject *ttl_obj = ttl < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(ttl);
            if (ttl_obj == NULL) {
                Py_DECREF(data);
                goto fail;
            }
            PyObject *d = new_datagram(self, data, e->source, e->group, e->interface, ttl_obj);
            Py_DECREF(data);
            Py_DECREF(ttl_obj);
            if (d == NULL)
                goto fail;
            int rc = PyList_Append(batch, d);
            Py_DECREF(d);
            if (rc < 0)
                goto fail;
        }
        if (count < BATCH)
            break;
    }
    return Py_BuildValue("(NnnnLi)", batch, read, truncated, not_for_group, drops, err);
fail:
    Py_DECREF(batch);
    return NULL;
}

static PyMethodDef Drain_methods[] = {
    {"read", (PyCFunction)(void (*)(void))Drain_read, METH_FASTCALL,
     "read(fd, reply, budget) -> (datagrams, read, truncated, not_for_group, drops, errno)"},
    {"set_groups", (PyCFunction)Drain_set_groups, METH_O,
     "Packed group address -> group, the groups delivered; forgets every cached arrival."},
    {"set_names", (PyCFunction)Drain_set_names, METH_O,
     "Interface index -> name for the interfaces in use; forgets every cached arrival."},
    {NULL},
};

static PyTypeObject DrainType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mcastio._platform.linux._cdrain.Drain",
    .tp_basicsize = sizeof(Drain),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "recvmmsg buffers for BATCH datagrams, and the Datagrams built from them.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Drain_init,
    .tp_dealloc = (destructor)Drain_dealloc,
    .tp_traverse = (traverseproc)Drain_traverse,
    .tp_clear = (inquiry)Drain_clear,
    .tp_methods = Drain_methods,
};

static PyMethodDef module_methods[] = {
    {"send_many", (PyCFunction)(void (*)(void))mcastio_send_many, METH_FASTCALL,
     "send_many(fd, payloads, address, segment, control=b'') -> messages sent (sendmmsg, or "
     "one UDP GSO message when segment > 0)"},
    {"send_each", (PyCFunction)(void (*)(void))mcastio_send_each, METH_FASTCALL,
     "send_each(fd, data, address, controls) -> (bytes sent or -errno per control)"},
    {NULL},
};

static struct PyModuleDef cdrain_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mcastio._platform.linux._cdrain",
    .m_doc = "The optional compiled receive drain (recvmmsg) and batched send (sendmmsg).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__cdrain(void)
{
    if (PyType_Ready(&DrainType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&cdrain_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&DrainType);
    if (PyModule_AddObject(m, "Drain", (PyObject *)&DrainType) < 0 ||
        PyModule_AddIntConstant(m, "BATCH", BATCH) < 0 ||
        PyModule_AddIntConstant(m, "SLOT", SLOT) < 0 ||
        PyModule_AddIntConstant(m, "MAX_SEND", MCASTIO_MAX_SEND) < 0) {
        Py_DECREF(&DrainType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
