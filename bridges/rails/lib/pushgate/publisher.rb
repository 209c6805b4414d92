# frozen_string_literal: true

require "json"
require "net/http"
require "securerandom"
require "uri"

module Pushgate
  # A message was not published: nsqd refused it (status and nsqd's message),
  # or it could not be sent at all.
  class PublishError < StandardError
    attr_reader :status, :nsqd_message

    def initialize(message, status: nil)
      @status = status
      @nsqd_message = message
      super(status ? "nsqd answered #{status}: #{message}" : message)
    end
  end

  # nsqd could not be reached, even after the retries.
  class NsqdUnavailable < PublishError; end

  # Publishes envelopes to nsqd's HTTP API. One keep-alive connection per
  # thread (Net::HTTP is not thread-safe); connection errors and 5xx answers
  # are retried with exponential backoff; every message carries an id, so a
  # retry that reached nsqd twice is still delivered once by the gateway.
  class Publisher
    RETRYABLE = [EOFError, IOError, SocketError, Errno::ECONNRESET, Errno::ECONNREFUSED, Errno::ECONNABORTED,
                 Errno::EPIPE, Errno::ETIMEDOUT, Errno::EHOSTUNREACH, Net::OpenTimeout, Net::ReadTimeout].freeze
    MAX_BODY_BYTES = 5 * 1024 * 1024 # nsqd --max-body-size, for /mpub

    attr_reader :config

    def initialize(config = Pushgate.config)
      @config = config
      address = config.nsqd_http_address.to_s
      @uri = URI(address.include?("://") ? address : "http://#{address}")
      raise ArgumentError, "#{address.inspect} is not an nsqd HTTP address" unless @uri.host

      @thread_key = :"pushgate_publisher_#{object_id}"
    end

    def publish(envelope)
      body = encode(envelope)
      pending = state[:batch]
      pending ? pending << body : post("/pub", body)
      nil
    end

    # Collects this thread's publishes and sends them with one /mpub (split at
    # nsqd's 5 MiB body limit) when the block ends. Nested batches join the
    # outer one; if the block raises, nothing is sent.
    def batch
      return yield if state[:batch]

      state[:batch] = []
      begin
        result = yield
        bodies = state[:batch]
      ensure
        state[:batch] = nil
      end
      publish_many(bodies)
      result
    end

    def publish_many(bodies)
      chunk = []
      size = 0
      bodies.each do |body|
        if !chunk.empty? && size + body.bytesize + 1 > MAX_BODY_BYTES
          post("/mpub", chunk.join("\n"))
          chunk = []
          size = 0
        end
        chunk << body
        size += body.bytesize + 1
      end
      post("/mpub", chunk.join("\n")) unless chunk.empty?
      nil
    end

    def encode(envelope)
      envelope = envelope.transform_keys(&:to_s)
      if envelope["receipt"] && envelope["id"].nil?
        # A made-up id would name the receipts with an id the caller does not know.
        raise ArgumentError, '"receipt" needs an "id" of yours: receipts name the message by it'
      end
      envelope["id"] ||= SecureRandom.hex(16)
      body = Envelope.encode(envelope)
      if body.bytesize > config.max_message_bytes
        raise PublishError, "message of #{body.bytesize} bytes is over the gateway's limit of " \
                            "#{config.max_message_bytes} (PUSHGATE_MAX_MESSAGE_BYTES)"
      end
      body
    end

    # Closes this thread's connection.
    def close
      http = state.delete(:http)
      http&.finish if http&.started?
    rescue IOError
      nil
    end

    private

    def state
      Thread.current[@thread_key] ||= {}
    end

    def http
      state[:http] ||= begin
        http = Net::HTTP.new(@uri.host, @uri.port)
        http.use_ssl = @uri.scheme == "https"
        http.open_timeout = config.open_timeout
        http.read_timeout = config.read_timeout
        http.keep_alive_timeout = 30
        http.start
      end
    end

    def post(path, body)
      request_path = "#{path}?topic=#{URI.encode_www_form_component(config.topic)}"
      attempts = 0
      loop do
        attempts += 1
        begin
          request = Net::HTTP::Post.new(request_path, "Content-Type" => "application/octet-stream")
          response = http.request(request, body)
        rescue *RETRYABLE => e
          close
          if attempts <= config.retries
            sleep(config.backoff * (2**(attempts - 1)))
            next
          end
          raise NsqdUnavailable, "nsqd at #{@uri.host}:#{@uri.port} unreachable after #{attempts} attempts: " \
                                 "#{e.class}: #{e.message}"
        end
        return if response.is_a?(Net::HTTPOK)

        status = response.code.to_i
        if status >= 500 && attempts <= config.retries # 503 EXITING: nsqd is stopping
          sleep(config.backoff * (2**(attempts - 1)))
          next
        end
        raise PublishError.new(nsqd_message(response.body), status: status)
      end
    end

    def nsqd_message(body)
      JSON.parse(body.to_s).fetch("message").to_s
    rescue JSON::ParserError, KeyError, TypeError
      body.to_s.strip
    end
  end
end
