/* LD_PRELOAD shim for softflowd 1.1.0 with libpcap >= 1.10: softflowd never turns on
 * immediate mode, so with little traffic packets wait in the capture buffer and no flow is
 * ever exported (irino/softflowd#48). This turns it on before every pcap_activate().
 * Declared by hand (no libpcap headers needed); the symbols resolve in softflowd's libpcap. */
#define _GNU_SOURCE
#include <dlfcn.h>

typedef struct pcap pcap_t;
int pcap_set_immediate_mode(pcap_t *p, int immediate);

int pcap_activate(pcap_t *p) {
    static int (*real)(pcap_t *) = 0;
    if (!real) real = (int (*)(pcap_t *))dlsym(RTLD_NEXT, "pcap_activate");
    pcap_set_immediate_mode(p, 1);
    return real(p);
}
