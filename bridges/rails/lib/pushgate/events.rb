# frozen_string_literal: true

require "json"
require "net/http"
require "socket"
require "uri"

module Pushgate
  # Reads pushgate's events (the gateway's --events-topic; docs/events.md) in
  # a worker process, with nothing but Ruby's standard library:
  #
  #   # bin/pushgate_events, or a rake task, run beside the Rails server (Procfile: events: bin/pushgate_events)
  #   Pushgate::Events.consume(channel: "rails") do |event|
  #     case event["type"]
  #     when "user_offline" then User.find_by(id: event["user"])&.update!(online: false)
  #     when "undelivered" then MissedMessageMailer.with(user_id: event["user"], id: event["id"]).deliver_later
  #     end
  #   end
  #
  # or, one block per type:
  #
  #   events = Pushgate::Events.new(channel: "rails")
  #   events.on("user_online") { |event| ... }
  #   events.run   # until INT or TERM, or events.stop from another thread
  #
  # NSQ as NSQ means it: one connection per nsqd (given, or found through
  # nsqlookupd every lookupd_poll_interval seconds), SUB, RDY max_in_flight;
  # a block that returns finishes the message (FIN); one that raises puts it
  # back (REQ, delayed by requeue_delay times its attempts) and the reader
  # backs off (RDY 0 for 1, 2, 4 ... seconds up to max_backoff, then RDY 1,
  # and max_in_flight again once messages succeed). A message that failed
  # max_attempts times is finished and logged, not retried forever. A broken
  # connection is made again after a pause that doubles up to
  # max_reconnect_delay. stop says CLS: nsqd sends nothing more and the
  # messages in flight go back to it. Blocks run one at a time.
  #
  # Processes reading the same channel share the events; each consumer that
  # wants all of them reads its own channel.
  class Events
    MAGIC = "  V2"
    RESPONSE = 0
    ERROR = 1
    MESSAGE = 2

    attr_reader :topic, :channel

    def self.consume(**options, &block)
      new(**options).tap { |events| events.on_any(&block) }.run
    end

    def initialize(topic: ENV.fetch("PUSHGATE_EVENTS_TOPIC", "pushgate-events"), channel: "rails",
                   nsqd_tcp_addresses: ENV.fetch("PUSHGATE_NSQD_TCP_ADDRESS", "").split(","),
                   lookupd_http_addresses: ENV.fetch("PUSHGATE_LOOKUPD_HTTP_ADDRESS", "").split(","),
                   max_in_flight: 50, max_attempts: 10, requeue_delay: 1.0, max_backoff: 60.0,
                   max_reconnect_delay: 30.0, lookupd_poll_interval: 30.0, logger: nil)
      @topic = topic
      @channel = channel
      @nsqd = nsqd_tcp_addresses.map(&:strip).reject(&:empty?)
      @lookupd = lookupd_http_addresses.map(&:strip).reject(&:empty?)
      if @nsqd.empty? && @lookupd.empty?
        raise ArgumentError, "give nsqd_tcp_addresses or lookupd_http_addresses (PUSHGATE_NSQD_TCP_ADDRESS)"
      end
      @max_in_flight = max_in_flight
      @max_attempts = max_attempts
      @requeue_delay = requeue_delay
      @max_backoff = max_backoff
      @max_reconnect_delay = max_reconnect_delay
      @lookupd_poll_interval = lookupd_poll_interval
      @logger = logger || default_logger
      @handlers = {}
      @any = nil
      @threads = {}
      @sockets = {}
      @lock = Mutex.new
      @handling = Mutex.new
      @stopping = false
      @stopped = Queue.new
    end

    # Calls the block for every event of this type.
    def on(type, &block)
      @handlers[type.to_s] = block
      self
    end

    # Calls the block for every event (before the one for its type, if any).
    def on_any(&block)
      @any = block
      self
    end

    # Reads in background threads; returns at once.
    def start
      @nsqd.each { |address| connect_to(address) }
      Thread.new { poll_lookupd } unless @lookupd.empty?
      self
    end

    # Reads until INT, TERM or #stop.
    def run
      %w[INT TERM].each { |signal| trap(signal) { stop } }
      start
      @stopped.pop
      join
    end

    # CLS on every connection: nsqd sends nothing more, and each connection
    # ends once nsqd answers. Safe from a signal handler.
    def stop
      @stopping = true
      @sockets.values.each do |sock|
        sock.write("CLS\n")
      rescue IOError, SystemCallError
        nil
      end
      @stopped << true
    end

    def join(timeout = 5)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      @threads.values.each { |t| t.join([deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC), 0].max) }
    end

    private

    def default_logger
      require "logger"
      Logger.new($stderr, progname: "pushgate-events")
    end

    def connect_to(address)
      @lock.synchronize do
        return if @threads.key?(address) || @stopping

        @threads[address] = Thread.new { connection(address) }
      end
    end

    def poll_lookupd
      until @stopping
        @lookupd.each do |lookupd|
          base = lookupd.start_with?("http") ? lookupd : "http://#{lookupd}"
          uri = URI("#{base}/lookup?#{URI.encode_www_form(topic: @topic)}")
          response = Net::HTTP.get_response(uri)
          next unless response.is_a?(Net::HTTPSuccess)

          JSON.parse(response.body).fetch("producers", []).each do |producer|
            connect_to("#{producer['broadcast_address']}:#{producer['tcp_port']}")
          end
        rescue StandardError => e
          @logger.warn("nsqlookupd #{lookupd}: #{e.message}")
        end
        sleep @lookupd_poll_interval
      end
    end

    def connection(address)
      delay = 0.5
      until @stopping
        begin
          session(address)
          delay = 0.5
        rescue IOError, SystemCallError, ProtocolError => e
          break if @stopping

          @logger.warn("nsqd #{address}: #{e.message}; connecting again in #{delay} s")
        end
        break if @stopping

        sleep delay
        delay = [delay * 2, @max_reconnect_delay].min
      end
    ensure
      @lock.synchronize { @threads.delete(address) }
    end

    def session(address)
      host, port = address.split(":")
      sock = Socket.tcp(host, Integer(port), connect_timeout: 10)
      @sockets[address] = sock
      sock.write(MAGIC + "SUB #{@topic} #{@channel}\n")
      kind, data = read_frame(sock)
      raise ProtocolError, "SUB refused: #{data}" if kind == ERROR

      backoff = 0
      sock.write("RDY #{@max_in_flight}\n")
      loop do
        kind, data = read_frame(sock)
        case kind
        when RESPONSE
          if data == "_heartbeat_"
            sock.write("NOP\n")
          elsif data == "CLOSE_WAIT"
            return
          end
        when ERROR
          @logger.warn("nsqd #{address}: #{data}")
        when MESSAGE
          backoff = handle(sock, data, backoff)
        end
      end
    ensure
      @sockets.delete(address)
      sock&.close
    end

    # Returns the back-off level after this message.
    def handle(sock, data, backoff)
      attempts = data.byteslice(8, 2).unpack1("n")
      id = data.byteslice(10, 16)
      begin
        event = JSON.parse(data.byteslice(26, data.bytesize - 26).force_encoding(Encoding::UTF_8))
        @handling.synchronize do
          @any&.call(event)
          handler = event.is_a?(Hash) && @handlers[event["type"]]
          handler&.call(event)
        end
      rescue StandardError => e
        if attempts >= @max_attempts
          @logger.error("event #{id} failed #{attempts} times, dropped: #{e.class}: #{e.message}")
          sock.write("FIN #{id}\n")
          return backoff
        end
        @logger.warn("event #{id} failed (attempt #{attempts}), requeued: #{e.class}: #{e.message}")
        sock.write("REQ #{id} #{(@requeue_delay * attempts * 1000).to_i}\n")
        backoff += 1
        sock.write("RDY 0\n")             # take nothing while backing off
        sleep [2**(backoff - 1), @max_backoff].min
        sock.write("RDY 1\n") unless @stopping  # then one, to test the water
        return backoff
      end
      sock.write("FIN #{id}\n")
      if backoff.positive?
        backoff -= 1
        sock.write("RDY #{@max_in_flight}\n") if backoff.zero?
      end
      backoff
    end

    def read_frame(sock)
      head = sock.read(8)
      raise ProtocolError, "connection closed by nsqd" if head.nil? || head.bytesize < 8

      size, kind = head.unpack("l>L>")
      data = sock.read(size - 4)
      raise ProtocolError, "connection closed by nsqd" if data.nil? || data.bytesize < size - 4

      [kind, kind == MESSAGE ? data : data.force_encoding(Encoding::UTF_8)]
    end

    class ProtocolError < StandardError; end
  end
end
