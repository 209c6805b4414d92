# frozen_string_literal: true

require "json"

module Pushgate
  # The envelope published into NSQ, in the canonical bytes every bridge
  # shares (bridges/testdata/envelopes.json): keys in the order
  # channel, channels, user, users, data, id, receipt, exclude; compact JSON,
  # UTF-8 as is. "exclude" names a gateway connection (its sid) that the
  # message skips: ActionCable.server.broadcast(..., exclude_socket: sid).
  module Envelope
    ORDER = %w[channel channels user users data id receipt exclude].freeze
    TARGETS = %w[channel channels user users].freeze

    module_function

    def encode(envelope)
      envelope = envelope.transform_keys(&:to_s)
      unknown = envelope.keys - ORDER
      raise ArgumentError, "unknown envelope fields: #{unknown.sort.join(', ')}" unless unknown.empty?
      raise ArgumentError, 'an envelope needs "data"' unless envelope.key?("data")

      ordered = {}
      ORDER.each do |key|
        next unless envelope.key?(key)

        value = envelope[key]
        next if value.nil? && key != "data"
        next if key == "receipt" && receipt(value, ordered) == false

        ordered[key] = case key
                       when "channel" then channel(value)
                       when "channels" then list(value, key).map { |v| channel(v) }
                       when "user" then identifier(value, "user id")
                       when "users" then list(value, key).map { |v| identifier(v, "user id") }
                       when "id" then identifier(value, "message id")
                       when "exclude" then identifier(value, "connection id")
                       else value
                       end
      end
      unless TARGETS.any? { |key| ordered[key] && !ordered[key].empty? }
        raise ArgumentError, 'an envelope needs a target: "channel", "channels", "user" or "users"'
      end

      JSON.generate(ordered)
    end

    # A receipt (docs/events.md) names the message by its id.
    def receipt(value, ordered)
      raise ArgumentError, '"receipt" must be true or false' unless [true, false].include?(value)
      raise ArgumentError, '"receipt" needs an "id": receipts name the message by it' if value && !ordered.key?("id")

      value
    end

    def list(value, key)
      raise ArgumentError, "\"#{key}\" must be a list" unless value.is_a?(Array)

      value
    end

    def channel(value)
      unless value.is_a?(String) && value.length.between?(1, 255) && value.match?(/\A[[:print:]]+\z/)
        raise ArgumentError, "#{value.inspect} is not a channel name (1-255 printable characters)"
      end

      value
    end

    def identifier(value, what)
      unless (value.is_a?(String) && !value.empty?) || value.is_a?(Integer)
        raise ArgumentError, "#{value.inspect} is not a #{what} (a non-empty string or an integer)"
      end

      value.to_s
    end
  end
end
