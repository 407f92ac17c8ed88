/* The compiled receive drain and batched send: recvmmsg/sendmmsg in C.
 *
 * Optional: mcastio/_drain.py picks this module when it imported, and the pure
 * path (mcastio/_receive.py with mcastio/_mmsg.py) otherwise. Both must produce
 * identical Datagram values and counts; tests/test_drain_paths.py checks it.
 *
 * Drain(family, datagram_type, index_to_name) owns the buffers of BATCH
 * messages (payload slots in one anonymous mapping, so untouched pages cost no
 * memory) and a small cache of (source address, arrival interface, TTL) -> the
 * Python objects they become, so a flood from one sender builds its source tuple
 * once. Datagram values are built by writing the dataclass's slots directly:
 * the same as object.__new__ plus the slot descriptors' __set__, which the pure
 * path does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#define BATCH 32
/* Default payload room per message: the largest UDP payload plus one, so MSG_TRUNC
 * still tells an oversize datagram apart. */
#define SLOT 65536
#define CONTROL_ROOM 256
#define CACHE 64

#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

typedef struct {
    int used;
    socklen_t namelen;
    unsigned char name[sizeof(struct sockaddr_in6)];
    int ifindex;
    int ttl;   /* -1: none */
    int reply; /* replies and group traffic resolve names differently */
    PyObject *source;
    PyObject *interface;
} CacheEntry;

typedef struct {
    PyObject_HEAD
    int family;
    PyTypeObject *dgram_type;
    PyObject *index_to_name; /* callable(int) -> str, for indexes not in names */
    PyObject *names;         /* dict int -> str */
    Py_ssize_t off_data, off_source, off_group, off_interface, off_ttl;
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
    self->family = family;
    Py_INCREF(type);
    self->dgram_type = t;
    Py_INCREF(index_to_name);
    self->index_to_name = index_to_name;
    self->names = PyDict_New();
    if (self->names == NULL)
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
    for (int i = 0; i < CACHE; i++) {
        Py_VISIT(self->cache[i].source);
        Py_VISIT(self->cache[i].interface);
    }
    return 0;
}

static int
Drain_clear(Drain *self)
{
    Py_CLEAR(self->dgram_type);
    Py_CLEAR(self->index_to_name);
    Py_CLEAR(self->names);
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

/* The cached (source, interface) of one arrival; a new entry on a miss. */
static CacheEntry *
lookup(Drain *self, const unsigned char *name, socklen_t namelen, int ifindex, int ttl, int reply)
{
    if (namelen > sizeof(struct sockaddr_in6))
        namelen = sizeof(struct sockaddr_in6);
    unsigned long h = (unsigned long)ifindex * 31u + (unsigned long)(ttl + 1) * 7u + reply;
    for (socklen_t i = 0; i < namelen; i++)
        h = h * 131u + name[i];
    CacheEntry *e = &self->cache[h % CACHE];
    if (e->used && e->namelen == namelen && e->ifindex == ifindex && e->ttl == ttl &&
        e->reply == reply && memcmp(e->name, name, namelen) == 0)
        return e;
    PyObject *iface = interface_name(self, ifindex, reply);
    if (iface == NULL) {
        if (PyErr_Occurred())
            return NULL;
        static CacheEntry none = {0};
        return &none; /* a reply from an interface not in use */
    }
    PyObject *source = make_source(self, name);
    if (source == NULL) {
        Py_DECREF(iface);
        return NULL;
    }
    Py_XSETREF(e->source, source);
    Py_XSETREF(e->interface, iface);
    e->used = 1;
    e->namelen = namelen;
    memcpy(e->name, name, namelen);
    e->ifindex = ifindex;
    e->ttl = ttl;
    e->reply = reply;
    return e;
}

static PyObject *
new_datagram(Drain *self, PyObject *data, PyObject *source, PyObject *group, PyObject *iface,
             PyObject *ttl)
{
    PyObject *d = self->dgram_type->tp_alloc(self->dgram_type, 0);
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
    return d;
}

/* read(fd, group, budget, packed_group) ->
 *     (datagrams, read, truncated, not_for_group, drops, errno)
 *
 * group is the str put in Datagram.group, or None for replies (delivered when
 * they arrived on an interface in names). drops is the largest SO_RXQ_OVFL count
 * seen (-1: none); errno is what ended the reads early (0: the socket was empty
 * or the budget spent), so the datagrams already read are never lost. */
static PyObject *
Drain_read(Drain *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "read(fd, group, budget, packed_group)");
        return NULL;
    }
    if (self->payload == NULL || self->names == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Drain.__init__ was not called");
        return NULL;
    }
    int fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    PyObject *group = args[1];
    Py_ssize_t budget = PyLong_AsSsize_t(args[2]);
    if (budget == -1 && PyErr_Occurred())
        return NULL;
    const char *packed;
    Py_ssize_t packed_len;
    if (PyBytes_AsStringAndSize(args[3], (char **)&packed, &packed_len) < 0)
        return NULL;
    int reply = group == Py_None;
    Py_ssize_t addr_len = self->family == AF_INET ? 4 : 16;
    if (!reply && packed_len != addr_len) {
        PyErr_SetString(PyExc_ValueError, "packed_group has the wrong length");
        return NULL;
    }
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
            int ifindex = -1, ttl = -1, to_group = 0;
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
                        to_group = !reply && self->family == AF_INET &&
                                   memcmp(&info.ipi_addr, packed, 4) == 0;
                    } else if (c->cmsg_type == IP_TTL && size >= sizeof(int)) {
                        memcpy(&ttl, data, sizeof(int));
                    }
                } else if (c->cmsg_level == IPPROTO_IPV6) {
                    if (c->cmsg_type == IPV6_PKTINFO && size >= sizeof(struct in6_pktinfo)) {
                        struct in6_pktinfo info;
                        memcpy(&info, data, sizeof info);
                        ifindex = (int)info.ipi6_ifindex;
                        to_group = !reply && self->family == AF_INET6 &&
                                   memcmp(&info.ipi6_addr, packed, 16) == 0;
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
            if (!reply && !to_group) {
                not_for_group++;
                continue;
            }
            if (reply)
                ttl = -1; /* replies carry no TTL, whatever the socket asked for */
            CacheEntry *e = lookup(self, (const unsigned char *)h->msg_name, h->msg_namelen,
                                   ifindex, ttl, reply);
            if (e == NULL)
                goto fail;
            if (!e->used) {
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
            PyObject *d = new_datagram(self, data, e->source, group, e->interface, ttl_obj);
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
     "read(fd, group, budget, packed_group) -> (datagrams, read, truncated, not_for_group,"
     " drops, errno)"},
    {"set_names", (PyCFunction)Drain_set_names, METH_O,
     "Interface index -> name for the interfaces in use; forgets every cached arrival."},
    {NULL},
};

static PyTypeObject DrainType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mcastio._cdrain.Drain",
    .tp_basicsize = sizeof(Drain),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "recvmmsg buffers for BATCH datagrams of one family, and the Datagrams built "
              "from them.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Drain_init,
    .tp_dealloc = (destructor)Drain_dealloc,
    .tp_traverse = (traverseproc)Drain_traverse,
    .tp_clear = (inquiry)Drain_clear,
    .tp_methods = Drain_methods,
};

/* send_many(fd, payloads, address, segment) -> messages sent
 *
 * One sendmmsg call (the kernel takes at most UIO_MAXIOV = 1024 messages per
 * call) for payloads sent to the packed sockaddr address. With segment > 0 the
 * payloads go as one UDP GSO message of that segment size (UDP_SEGMENT): every
 * payload but the last must be exactly segment bytes; returns len(payloads). */
static PyObject *
send_many(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "send_many(fd, payloads, address, segment)");
        return NULL;
    }
    int fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    PyObject *seq = PySequence_Fast(args[1], "payloads must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_buffer addr;
    if (PyObject_GetBuffer(args[2], &addr, PyBUF_SIMPLE) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    long segment = PyLong_AsLong(args[3]);
    PyObject *result = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > 1024)
        n = 1024;
    Py_buffer *views = PyMem_Calloc(n ? n : 1, sizeof(Py_buffer));
    struct iovec *iov = PyMem_Calloc(n ? n : 1, sizeof(struct iovec));
    struct mmsghdr *msgs = PyMem_Calloc(n ? n : 1, sizeof(struct mmsghdr));
    Py_ssize_t held = 0;
    if (segment == -1 && PyErr_Occurred())
        goto done;
    if (views == NULL || iov == NULL || msgs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; held < n; held++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, held), &views[held],
                               PyBUF_SIMPLE) < 0)
            goto done;
        iov[held].iov_base = views[held].buf;
        iov[held].iov_len = (size_t)views[held].len;
    }
    int sent;
    if (segment > 0) {
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(uint16_t))];
        } control;
        memset(&control, 0, sizeof control);
        struct msghdr m = {0};
        m.msg_name = addr.buf;
        m.msg_namelen = (socklen_t)addr.len;
        m.msg_iov = iov;
        m.msg_iovlen = (size_t)n;
        m.msg_control = control.buf;
        m.msg_controllen = sizeof control.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t size16 = (uint16_t)segment;
        memcpy(CMSG_DATA(c), &size16, sizeof size16);
        Py_BEGIN_ALLOW_THREADS
        sent = sendmsg(fd, &m, MSG_DONTWAIT) < 0 ? -1 : (int)n;
        Py_END_ALLOW_THREADS
    } else {
        for (Py_ssize_t i = 0; i < n; i++) {
            msgs[i].msg_hdr.msg_name = addr.buf;
            msgs[i].msg_hdr.msg_namelen = (socklen_t)addr.len;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        Py_BEGIN_ALLOW_THREADS
        sent = n ? sendmmsg(fd, msgs, (unsigned int)n, MSG_DONTWAIT) : 0;
        Py_END_ALLOW_THREADS
    }
    if (sent < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    result = PyLong_FromLong(sent);
done:
    for (Py_ssize_t i = 0; i < held; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(iov);
    PyMem_Free(msgs);
    PyBuffer_Release(&addr);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef module_methods[] = {
    {"send_many", (PyCFunction)(void (*)(void))send_many, METH_FASTCALL,
     "send_many(fd, payloads, address, segment) -> messages sent (sendmmsg, or one UDP GSO "
     "message when segment > 0)"},
    {NULL},
};

static struct PyModuleDef cdrain_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mcastio._cdrain",
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
        PyModule_AddIntConstant(m, "MAX_SEND", 1024) < 0) {
        Py_DECREF(&DrainType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
