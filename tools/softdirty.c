// SPDX-License-Identifier: MIT
/* softdirty(1): the command-line tool. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "softdirty.h"
#include "run.h"

static const char *const cap_names[] = {
	"self", "remote", "kernel-writes", "exact", "contents", "regrown",
	"prot-changes", "huge-pages",
};

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static int cmd_probe(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct softdirty_probe_result r[SOFTDIRTY_BACKEND_COUNT];
	int json = 0, c, n, i;
	unsigned int b;

	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = 1;
			break;
		case 'h':
			printf("usage: softdirty probe [--json]\n");
			return 0;
		default:
			return 2;
		}
	}
	n = softdirty_probe(r, SOFTDIRTY_BACKEND_COUNT);
	if (n < 0) {
		fprintf(stderr, "softdirty: probe: %s\n", strerror(-n));
		return 1;
	}
	if (json) {
		printf("{\"working\": %d, \"backends\": [", n);
		for (i = 0; i < SOFTDIRTY_BACKEND_COUNT; i++) {
			printf("%s\n  {\"name\": ", i ? "," : "");
			json_str(r[i].name);
			printf(", \"works\": %s, \"error\": ",
			       r[i].status ? "false" : "true");
			json_str(r[i].status ? strerror(-r[i].status) : "");
			printf(", \"caps\": [");
			for (b = 0; b < sizeof(cap_names) / sizeof(*cap_names); b++)
				if (r[i].caps & (1u << b))
					printf("%s\"%s\"",
					       (r[i].caps & ((1u << b) - 1)) ? ", " : "",
					       cap_names[b]);
			printf("], \"reason\": ");
			json_str(r[i].reason);
			printf("}");
		}
		printf("\n]}\n");
	} else {
		printf("%-9s %-5s %s\n", "BACKEND", "WORKS", "DETAILS");
		for (i = 0; i < SOFTDIRTY_BACKEND_COUNT; i++) {
			printf("%-9s %-5s ", r[i].name, r[i].status ? "no" : "yes");
			if (!r[i].status) {
				printf("[");
				for (b = 0; b < sizeof(cap_names) / sizeof(*cap_names); b++)
					if (r[i].caps & (1u << b))
						printf("%s%s",
						       (r[i].caps & ((1u << b) - 1)) ? "," : "",
						       cap_names[b]);
				printf("] limits: %s\n", r[i].reason);
			} else {
				printf("%s\n", r[i].reason);
			}
		}
	}
	return n > 0 ? 0 : 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: softdirty COMMAND [ARGS]\n"
		"\n"
		"commands:\n"
		"  probe [--json]   which tracking backends work on this kernel, and why not\n"
		"  run [--] COMMAND [ARGS...]\n"
		"                   run COMMAND with libsoftdirty-preload.so: the kernel's\n"
		"                   soft-dirty files work in it on any kernel\n"
		"  watch [--interval MS] [--backend NAME] [--json] [--heatmap FILE.svg]\n"
		"        (PID | -- COMMAND [ARGS...])\n"
		"                   what another process writes, every interval\n"
		"  dump PID -D DIR [--parent DIR] [--leave-stopped]\n"
		"                   write the process's memory to the image DIR (only the\n"
		"                   pages changed since the parent image with --parent)\n"
		"  image inspect|verify|flatten|diff ...\n"
		"                   summarise, check, merge a chain, compare images\n"
		"  restore DIR --pid PID\n"
		"                   write an image's memory back into the process\n"
		"  version          print the version\n"
		"\n"
		"See softdirty(1).\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "probe"))
		return cmd_probe(argc - 1, argv + 1);
	if (!strcmp(argv[1], "run"))
		return softdirty_cmd_run(argc - 1, argv + 1);
	if (!strcmp(argv[1], "watch"))
		return cmd_watch(argc - 1, argv + 1);
	if (!strcmp(argv[1], "dump"))
		return cmd_dump(argc - 1, argv + 1);
	if (!strcmp(argv[1], "image"))
		return cmd_image(argc - 1, argv + 1);
	if (!strcmp(argv[1], "restore"))
		return cmd_restore(argc - 1, argv + 1);
	if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
		printf("softdirty %d.%d\n", SOFTDIRTY_VERSION_MAJOR,
		       SOFTDIRTY_VERSION_MINOR);
		return 0;
	}
	if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") ||
	    !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "softdirty: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
