#!/usr/bin/perl
# code-mappings.pl: how much memory and how many mappings a JIT's code
# took, replayed from an strace log of its mmap/mprotect/munmap calls:
#     strace -f -qq -e trace=mmap,munmap,mprotect -o LOG PROGRAM
#     perl tools/code-mappings.pl LOG
# Prints one line of key=value:
#   mmap, mprotect, munmap  calls of the whole process (successful or not);
#   pwritev       calls of the whole process, if traced (procmem's writes);
#   code_mmaps    mappings that were ever executable (at mmap or later by
#                 mprotect): the JIT's code mappings;
#   alias_mmaps   shared mappings of the same file descriptor as a code
#                 mapping that never became executable (dualmap's RW views);
#   code_pages    pages of all those mappings, summed over the run;
#   peak_pages    the most of those pages mapped at one time;
#   peak_vmas     the most kernel mappings (VMAs) they formed at one time:
#                 runs of adjacent pages with equal protection, merged across
#                 anonymous mappings as the kernel does, never across
#                 different shared ones.
# Private file mappings (the program and its libraries) are left out.
use strict;
use warnings;
no warnings "portable"; # 64-bit addresses through hex()

my $PAGE = 4096; # x86_64 and the usual aarch64/riscv64 kernels

my (%calls, @events, %pending);
while (my $line = <>) {
    chomp $line;
    my ($pid, $rest) = $line =~ /^(\d+)\s+(.*)$/ or next;
    # A call interrupted by another thread's output: join its two halves.
    if ($rest =~ /^(.*) <unfinished \.\.\.>$/) {
        $pending{$pid} = $1;
        next;
    }
    if ($rest =~ /^<\.\.\. \w+ resumed>(.*)$/) {
        next unless defined $pending{$pid};
        $rest = delete($pending{$pid}) . $1;
    }
    my ($call, $args, $ret) = $rest =~ /^(\w+)\((.*)\)\s+=\s+(\S+)/ or next;
    $calls{$call}++;
    next if $ret =~ /^-/; # failed: changed nothing
    my @a = split /,\s*/, $args;
    if ($call eq 'mmap') {
        my ($len, $prot, $flags, $fd) = @a[1 .. 4];
        push @events, {
            op => 'map', start => hex($ret), len => $len, prot => $prot,
            # Private file mappings are code and data of the program.
            skip => ($flags =~ /MAP_PRIVATE/ && $fd != -1) ? 1 : 0,
            shared => ($flags =~ /MAP_SHARED/) ? 1 : 0,
            fd => $fd,
        };
    } elsif ($call eq 'mprotect') {
        push @events, {op => 'prot', start => hex($a[0]), len => $a[1],
                       prot => $a[2]};
    } elsif ($call eq 'munmap') {
        push @events, {op => 'unmap', start => hex($a[0]), len => $a[1]};
    }
}

sub pages {
    my ($e) = @_;
    my $first = int($e->{start} / $PAGE);
    my $n = int(($e->{len} + $PAGE - 1) / $PAGE);
    return ($first .. $first + $n - 1);
}

# Pass 1: which mappings ever became executable, and their descriptors.
my (%owner, %is_code, %code_fd, @maps);
my $id = 0;
for my $e (@events) {
    if ($e->{op} eq 'map') {
        $e->{id} = ++$id;
        $maps[$id] = $e;
        for my $p (pages($e)) {
            if ($e->{skip}) { delete $owner{$p} } else { $owner{$p} = $id }
        }
        $is_code{$id} = 1 if !$e->{skip} && $e->{prot} =~ /PROT_EXEC/;
    } elsif ($e->{op} eq 'prot') {
        next unless $e->{prot} =~ /PROT_EXEC/;
        for my $p (pages($e)) { $is_code{$owner{$p}} = 1 if $owner{$p} }
    } else {
        delete @owner{pages($e)};
    }
}
for my $i (keys %is_code) {
    $code_fd{$maps[$i]{fd}} = 1 if $maps[$i]{shared};
}
my %tracked = %is_code;
my $aliases = 0;
for my $i (1 .. $id) {
    next if $is_code{$i} || !$maps[$i]{shared} || !$code_fd{$maps[$i]{fd}};
    $tracked{$i} = 1;
    $aliases++;
}

# Pass 2: replay the tracked mappings page by page. A page is
# [mapping id, protection]; a VMA starts at every tracked page that cannot
# merge with the page before it.
my %page;
my ($now, $peak, $vmas, $peak_vmas, $total) = (0, 0, 0, 0, 0);
sub merges {
    my ($p) = @_;
    my ($x, $y) = ($page{$p - 1}, $page{$p});
    return 0 unless $x && $y && $x->[1] eq $y->[1];
    return 1 if $x->[0] == $y->[0];
    return !$maps[$x->[0]]{shared} && !$maps[$y->[0]]{shared};
}
sub starts { my ($p) = @_; return $page{$p} && !merges($p) ? 1 : 0 }
sub set_page {
    my ($p, $v) = @_;
    $vmas -= starts($p) + starts($p + 1);
    $now += ($v ? 1 : 0) - ($page{$p} ? 1 : 0);
    if ($v) { $page{$p} = $v } else { delete $page{$p} }
    $vmas += starts($p) + starts($p + 1);
}
for my $e (@events) {
    if ($e->{op} eq 'map') {
        my $mine = $tracked{$e->{id}};
        $total += int(($e->{len} + $PAGE - 1) / $PAGE) if $mine;
        set_page($_, $mine ? [$e->{id}, $e->{prot}] : undef) for pages($e);
    } elsif ($e->{op} eq 'prot') {
        for my $p (pages($e)) {
            set_page($p, [$page{$p}[0], $e->{prot}]) if $page{$p};
        }
    } else {
        set_page($_, undef) for pages($e);
    }
    $peak = $now if $now > $peak;
    $peak_vmas = $vmas if $vmas > $peak_vmas;
}

printf "mmap=%d mprotect=%d munmap=%d pwritev=%d code_mmaps=%d "
     . "alias_mmaps=%d code_pages=%d peak_pages=%d peak_vmas=%d\n",
    $calls{mmap} // 0, $calls{mprotect} // 0, $calls{munmap} // 0,
    $calls{pwritev} // 0,
    scalar(keys %is_code), $aliases, $total, $peak, $peak_vmas;
